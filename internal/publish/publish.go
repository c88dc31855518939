// Package publish sends messages to JetStream through a bounded asynchronous
// window. The stream they land in is provisioned elsewhere
// (internal/provision).
//
// The Publisher keeps at most MaxInflight messages unacknowledged and reports
// acknowledgements strictly in submission order. When a publish fails it stops
// sending new messages, re-publishes every failed message of the window in its
// original order with the same message id (JetStream deduplicates those that
// did get stored), and only then resumes. No message is ever skipped: a
// message is either acknowledged, replaced by a dead letter the caller built,
// or the publisher stops with an error.
//
// The stream order is the submission order as long as the server never
// stores a message after refusing or losing an earlier one. Fast batches
// (batch.go) guarantee that on the server's side. A message acked on its own
// cannot be made to depend on the one before it, so the window is bounded in
// bytes (MaxInflightBytes) below the server's ingest queue per stream: a
// single publisher then never gets a publish refused for load. Several
// publishers whose windows together exceed that queue, or an ack lost
// across a stream leader change, can still reorder such messages.
//
// It knows nothing of Postgres or LSNs.
package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
)

// Message is one message to publish. Header must already carry Nats-Msg-Id.
type Message struct {
	Subject string
	Body    []byte
	Header  nats.Header
	MsgID   string
	Owner   Owner // what the message is published for; nil: nothing to tell
	// Ahead is how many more messages the caller has ready right behind
	// this one: a burst of at least BatchMinAhead opens a fast batch, which
	// the following messages join while Ahead stays above 0 (see
	// Options.Batch). A caller that sets it must publish again without
	// waiting on anything else; the last message of a burst must have 0, or
	// its ack waits for the next.
	Ahead int

	deadLetter bool  // a replacement built by Rejected: never rejected again
	size       int64 // bytes counted in the window
}

// Owner is what a message is published for: an event, a row. The publisher
// settles every message it was given exactly once, and then calls Settled
// once: when the message is stored (ack is its ack, valid only during the
// call), when the dead letter Rejected built in its place is stored (m is
// the dead letter, which carries the same Owner), or when Rejected dropped
// it (ack is nil). The publisher no longer touches m or its storage after
// the call, so the owner may reuse them.
type Owner interface {
	Settled(m *Message, ack *jetstream.PubAck)
}

// Options configure a Publisher.
type Options struct {
	MaxInflight int // window size; default 1024
	// MaxInflightBytes bounds the bytes of the window's messages as the
	// server counts them in a stream's ingest queue (subject, reply,
	// headers, body); default 32 MiB. See the package doc: kept below the
	// server's limit (128 MiB by default), the server never refuses one of
	// this window's publishes for load. A message larger than the bound is
	// sent alone.
	MaxInflightBytes int
	AckTimeout       time.Duration // per publish; default 10s
	MaxBackoff       time.Duration // retry backoff cap; default 5s
	// Acked is called, in submission order, once each message is stored (or
	// once its replacement from Rejected is stored). ack is valid only
	// during the call. A message stored as part of a fast batch gets an ack
	// without its stream sequence (0) and without a duplicate flag: the
	// server drops duplicates inside a batch without telling which.
	// Nil: nothing to do beyond Message.Owner.
	Acked func(m *Message, ack *jetstream.PubAck)
	// Rejected is called for a message JetStream can never accept as asked
	// (too large for the stream, no stream for its subject). It returns the
	// dead letter to publish in its place, or an error to stop the publisher.
	Rejected func(m *Message, err error) (*Message, error)
	// NoStream decides whether a "no responders" failure means no stream
	// covers the subject (true: reject) rather than JetStream being briefly
	// unavailable (false: retry). Nil means always retry.
	NoStream func(ctx context.Context, subject string) bool
	// Refused, when set, is asked about every failed publish before the
	// message is retried: a non-nil error says why it can never be
	// published as asked (say, the connection reported a permission
	// violation for its subject), and the message is rejected with that
	// error as the cause. Nil: retry.
	Refused func(ctx context.Context, m *Message, err error) error
	// Batch reports whether messages to subject may be sent as JetStream
	// fast batches: the subject belongs to a stream with allow_batched, on
	// nats-server 2.14 or later. Nil: every message is acked on its own. If
	// the server turns out not to take batches, the publisher falls back to
	// single acks by itself.
	Batch func(subject string) bool
	// Retried is called for every retry, for metrics.
	Retried func(m *Message, err error)
	Log     zerolog.Logger
}

type pending struct {
	m    *Message
	seq  uint64    // the token of its reply subject
	sent time.Time // its ack is due AckTimeout after
	err  error     // the publish failed before it was sent
}

// Publisher is the asynchronous window. Use Publish from one goroutine and run
// Run in another.
//
// Window publishes are plain NATS publishes with a reply subject of the
// publisher's own (prefix + sequence number); one subscription receives the
// acks and files each in a ring slot, and Run takes them in submission
// order. This is what jetstream's PublishMsgAsync does too, without a
// future, channels, a timer and a reflective JSON decode per message: on the
// relay's hot path those cost a third of its CPU. Recovery publishes
// synchronously through jetstream.
type Publisher struct {
	js    jetstream.JetStream
	nc    *nats.Conn
	opts  Options
	slots chan struct{}
	queue chan pending

	// The window's bytes: Publish adds, Run subtracts and wakes Publish
	// when it waits for room (bytes, or an empty window at a batch boundary).
	bytes    atomic.Int64
	roomWait atomic.Bool
	room     chan struct{}

	sendMu  sync.Mutex // held while sending one message, and for a whole recovery
	fatal   chan error
	once    sync.Once
	subOnce sync.Once
	subErr  error
	sub     *nats.Subscription // the acks; set by subscribe
	status  chan nats.Status   // connection drops; set by subscribe
	prefix  string             // reply subject prefix, ending in '.'
	nextSeq uint64             // guarded by sendMu

	mu     sync.Mutex // guards ring
	ring   []ackSlot
	mask   uint64
	notify chan struct{}    // an ack arrived
	ack    jetstream.PubAck // the last ack wait returned, owned by Run
	timer  *time.Timer      // wait's ack timeout, owned by Run
	stream string           // the last stream name seen in an ack, reused

	// Fast batches, guarded by mu (see batch.go).
	batches map[string]*batch
	open    *batch // the batch new messages join, if any
	noBatch bool   // the server refused fast batches: never again
	replay  bool   // duplicates are likely (a restart re-sends): no batches
	hold    bool   // a publish failed: send nothing until recovery ran
	// lastBatched: the last message sent went in a fast batch.
	lastBatched bool
	batchID     string // unique prefix of this publisher's batch ids
	batchN      uint64 // batches opened
	flow        string // acks every this many messages, at most
	replyBuf    []byte
	batched     atomic.Uint64
}

// ackSlot is where the ack of the window message with sequence seq lands.
type ackSlot struct {
	seq  uint64 // 0: free
	done bool
	ack  jetstream.PubAck
	err  error
}

// New returns a Publisher on js. js should be created with
// jetstream.WithPublishAsyncMaxPending above MaxInflight so the client never stalls.
func New(js jetstream.JetStream, opts Options) *Publisher {
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 1024
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 10 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = DefaultMaxInflightBytes
	}
	size := 1
	for size < opts.MaxInflight+1 {
		size <<= 1
	}
	if opts.MaxInflight < 8 {
		opts.Batch = nil // flow acks need room for several in the window
	}
	return &Publisher{
		js:     js,
		nc:     js.Conn(),
		opts:   opts,
		slots:  make(chan struct{}, opts.MaxInflight),
		queue:  make(chan pending, opts.MaxInflight),
		fatal:  make(chan error, 1),
		ring:   make([]ackSlot, size),
		mask:   uint64(size - 1),
		notify: make(chan struct{}, 1),

		room: make(chan struct{}, 1),

		batches: map[string]*batch{},
		replay:  true,
		flow:    strconv.Itoa(min(opts.MaxInflight/4, maxBatchFlow)),
	}
}

// subscribe starts receiving acks on the publisher's reply prefix.
func (p *Publisher) subscribe() error {
	p.subOnce.Do(func() {
		inbox := p.nc.NewInbox() // honours the connection's custom inbox prefix
		p.prefix = inbox + "."
		p.batchID = inbox[strings.LastIndexByte(inbox, '.')+1:] // unique, token-safe
		p.sub, p.subErr = p.nc.Subscribe(p.prefix+">", p.onAck)
		if p.subErr != nil {
			p.subErr = fmt.Errorf("subscribe to publish acks: %w", p.subErr)
			return
		}
		// The window bounds what can be pending; a dropped report (a flow
		// ack is cumulative, an error is not) must never happen here.
		if err := p.sub.SetPendingLimits(-1, -1); err != nil {
			p.subErr = fmt.Errorf("publish acks: %w", err)
			return
		}
		// When the connection drops, acks of the window may never come:
		// fail them at once, so that Run starts the in-order recovery (which
		// holds back new sends) before the connection is back, instead of a
		// newer message being stored while an older one waits for its
		// timeout.
		p.status = p.nc.StatusChanged(nats.RECONNECTING, nats.CLOSED)
		go func(status <-chan nats.Status) {
			for st := range status { // closed by close
				p.failAll(nats.ErrDisconnected)
				if st == nats.CLOSED {
					return
				}
			}
		}(p.status)
	})
	return p.subErr
}

// errStopped is what Publish returns once Run has returned.
var errStopped = errors.New("publisher stopped")

// close ends the ack subscription and the connection watch, once Run has
// returned; no subscription is made after it.
func (p *Publisher) close() {
	p.subOnce.Do(func() { p.subErr = errStopped })
	if p.sub != nil {
		_ = p.sub.Unsubscribe() //nolint:errcheck // the connection may be closed already
	}
	if p.status != nil {
		p.nc.RemoveStatusListener(p.status)
	}
}

// failAll ends every unanswered window publish with err.
func (p *Publisher) failAll(err error) {
	p.mu.Lock()
	for i := range p.ring {
		if s := &p.ring[i]; s.seq != 0 && !s.done {
			s.done, s.err = true, err
		}
	}
	clear(p.batches) // the server may never answer for them
	p.open = nil
	p.hold = true
	p.mu.Unlock()
	p.wake()
}

// wake tells Run that an ack arrived.
func (p *Publisher) wake() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// onAck files an ack (or a no-responders status) in its message's slot.
// Acks of messages no longer waited for (timed out, re-published) are
// dropped.
func (p *Publisher) onAck(msg *nats.Msg) {
	rest := msg.Subject[len(p.prefix):]
	var end *nats.Msg
	p.mu.Lock()
	if strings.IndexByte(rest, '.') >= 0 {
		end = p.onBatchAck(msg, rest)
	} else if seq, err := strconv.ParseUint(rest, 36, 64); err == nil {
		var ack jetstream.PubAck
		err := p.parseAck(msg, &ack)
		if err == nil && !ack.Duplicate {
			p.replay = false // past what an earlier run may have sent
		}
		p.fill(seq, &ack, err)
	}
	p.mu.Unlock()
	p.wake()
	if end != nil {
		// Failing that, the unconfirmed messages time out and are republished.
		_ = p.nc.PublishMsg(end) //nolint:errcheck // see above
	}
}

// fill files the outcome of window message seq, unless it was already
// settled or released. p.mu is held.
func (p *Publisher) fill(seq uint64, ack *jetstream.PubAck, err error) {
	s := &p.ring[seq&p.mask]
	if s.seq != seq || s.done {
		return
	}
	s.done, s.err = true, err
	if ack != nil && err == nil {
		s.ack = *ack
	}
	if err != nil {
		p.hold = true
	}
}

// parseAck reads a JetStream publish ack into ack, or returns the error it
// carries. p.mu is held.
func (p *Publisher) parseAck(msg *nats.Msg, ack *jetstream.PubAck) error {
	data := msg.Data
	if len(data) == 0 {
		if msg.Header.Get("Status") == "503" {
			return nats.ErrNoResponders
		}
		return jetstream.ErrInvalidJSAck
	}
	if !bytes.Contains(data, []byte(`"error"`)) {
		seq, ok := jsonUint(data, `"seq":`)
		stream, sok := jsonStr(data, `"stream":"`)
		if ok && sok {
			if string(stream) != p.stream { // no allocation when equal
				p.stream = string(stream)
			}
			*ack = jetstream.PubAck{Stream: p.stream, Sequence: seq, Duplicate: jsonTrue(data, `"duplicate":`)}
			if bytes.Contains(data, []byte(`"domain":`)) {
				d, _ := jsonStr(data, `"domain":"`)
				ack.Domain = string(d)
			}
			return nil
		}
	}
	// An error, or an ack of an unexpected shape: decode it fully.
	var resp struct {
		jetstream.PubAck
		Error *jetstream.APIError `json:"error,omitempty"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return fmt.Errorf("%w: %w", jetstream.ErrInvalidJSAck, err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if resp.Stream == "" || resp.Sequence == 0 {
		return jetstream.ErrInvalidJSAck
	}
	*ack = resp.PubAck
	return nil
}

// jsonUint returns the unsigned number right after key in data.
func jsonUint(data []byte, key string) (uint64, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, false
	}
	var n uint64
	j := i + len(key)
	start := j
	for ; j < len(data) && data[j] >= '0' && data[j] <= '9'; j++ {
		n = n*10 + uint64(data[j]-'0')
	}
	return n, j > start && j-start < 20
}

// jsonTrue reports whether key is followed by true (the server writes
// `"duplicate": true`, with a space).
func jsonTrue(data []byte, key string) bool {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return false
	}
	return bytes.HasPrefix(bytes.TrimLeft(data[i+len(key):], " \t\r\n"), []byte("true"))
}

// jsonStr returns the string right after key (which ends with the opening
// quote) in data, when it has no escapes.
func jsonStr(data []byte, key string) ([]byte, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return nil, false
	}
	rest := data[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return nil, false
	}
	return rest[:j], true
}

// JetStreamOptions are the options the client needs for this publisher's window.
func JetStreamOptions(maxInflight int, ackTimeout time.Duration) []jetstream.JetStreamOpt {
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncMaxPending(maxInflight*2 + 16),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
	}
}

// Publish submits m, blocking while the window is full. It returns an error
// only when ctx ends or the publisher stopped.
func (p *Publisher) Publish(ctx context.Context, m *Message) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case err := <-p.fatal:
		p.fatal <- err
		return err
	}
	if err := p.subscribe(); err != nil {
		<-p.slots
		return err
	}
	if err := p.reserve(ctx, m); err != nil {
		<-p.slots
		return err
	}
	if err := p.boundary(ctx, m); err != nil {
		p.free(m)
		return err
	}
	p.sendMu.Lock()
	p.nextSeq++
	seq := p.nextSeq
	p.mu.Lock()
	s := &p.ring[seq&p.mask]
	s.seq, s.done, s.err = seq, false, nil
	var (
		reply string
		end   *nats.Msg
		err   error
	)
	if p.hold {
		// An earlier message failed and waits for Run's recovery: sending
		// this one now could store it first. Recovery republishes it.
		err = errHeldBack
	} else {
		reply, end = p.replyFor(m, seq)
	}
	p.mu.Unlock()
	if end != nil {
		err = p.nc.PublishMsg(end)
	}
	if err == nil {
		err = p.nc.PublishMsg(&nats.Msg{Subject: m.Subject, Reply: reply, Data: m.Body, Header: m.Header})
	}
	p.queue <- pending{m: m, seq: seq, sent: time.Now(), err: err}
	p.sendMu.Unlock()
	return nil
}

// DefaultMaxInflightBytes is the default Options.MaxInflightBytes: a quarter
// of nats-server's default ingest queue per stream (128 MiB), so that
// several publishers on one stream stay under it too.
const DefaultMaxInflightBytes = 32 << 20

// reserve waits until m fits in the window's bytes and counts it there.
// Only Publish adds bytes, so what it saw free stays free.
func (p *Publisher) reserve(ctx context.Context, m *Message) error {
	m.size = p.wireSize(m)
	limit := int64(p.opts.MaxInflightBytes)
	for {
		used := p.bytes.Load()
		if used == 0 || used+m.size <= limit {
			p.bytes.Add(m.size)
			return nil
		}
		p.roomWait.Store(true)
		if p.bytes.Load() != used {
			continue // freed meanwhile: its wake-up may have come before the flag
		}
		select {
		case <-p.room:
		case <-ctx.Done():
			return ctx.Err()
		case err := <-p.fatal:
			p.fatal <- err
			return err
		}
	}
}

// wireSize is m's size in the server's ingest queue: subject, reply (its
// longest form), headers and body.
func (p *Publisher) wireSize(m *Message) int64 {
	n := len(m.Subject) + len(m.Body) + len(p.prefix) + maxReplySuffix
	if len(m.Header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4 // "k: v\r\n"
			}
		}
	}
	return int64(n)
}

// free gives m's window slot and bytes back.
func (p *Publisher) free(m *Message) {
	<-p.slots
	p.bytes.Add(-m.size)
	if p.roomWait.Load() && p.roomWait.Swap(false) {
		select {
		case p.room <- struct{}{}:
		default:
		}
	}
}

// boundary makes m wait, when it does not join the open fast batch, until
// every message before it is confirmed, if it follows a batch or opens one.
// The server keeps order under push-back only inside a batch: a batch
// message it refuses could be overtaken by a message behind it outside the
// batch, and a message before a batch by the batch. So a batch has the
// window to itself; the cost is a round trip per batch, at most two.
func (p *Publisher) boundary(ctx context.Context, m *Message) error {
	p.mu.Lock()
	ok := !p.hold && p.batching(m)
	open := p.open != nil && !p.open.closed
	wait := !p.hold && !(open && ok) && (p.lastBatched || (ok && m.Ahead >= BatchMinAhead))
	p.mu.Unlock()
	if !wait {
		return nil
	}
	if open {
		p.endOpenBatch() // its tail is confirmed by the commit only
	}
	for len(p.slots) > 1 { // m's own slot is taken
		p.roomWait.Store(true)
		if len(p.slots) <= 1 {
			break // freed meanwhile: its wake-up may have come before the flag
		}
		select {
		case <-p.room:
		case <-ctx.Done():
			return ctx.Err()
		case err := <-p.fatal:
			p.fatal <- err
			return err
		}
	}
	return nil
}

// Batched is the number of messages sent as part of a fast batch.
func (p *Publisher) Batched() uint64 { return p.batched.Load() }

// Inflight is the number of messages submitted and not yet acknowledged.
func (p *Publisher) Inflight() int { return len(p.slots) }

// Run processes acknowledgements until ctx ends or a message cannot be
// published nor dead-lettered.
func (p *Publisher) Run(ctx context.Context) error {
	defer p.close()
	for {
		var pend pending
		select {
		case pend = <-p.queue:
		case <-ctx.Done():
			return nil
		}
		ack, err := p.wait(ctx, pend)
		if err == nil {
			p.acked(pend.m, ack)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := p.recover(ctx, pend, err); err != nil {
			p.once.Do(func() { p.fatal <- err })
			return err
		}
	}
}

// acked settles a stored message: the window's slot and bytes are given
// back before the owner may reuse the message's storage.
func (p *Publisher) acked(m *Message, ack *jetstream.PubAck) {
	if p.opts.Acked != nil {
		p.opts.Acked(m, ack)
	}
	p.free(m)
	if m.Owner != nil {
		m.Owner.Settled(m, ack)
	}
}

// wait returns pend's ack, or why there is none: the publish failed, the
// server answered with an error, or no ack came within AckTimeout of the
// publish (so that acks lost together, in a reconnect, time out together).
// The ack is valid until the next call.
func (p *Publisher) wait(ctx context.Context, pend pending) (*jetstream.PubAck, error) {
	if pend.err != nil {
		p.release(pend.seq)
		return nil, pend.err
	}
	var timeout <-chan time.Time
	for {
		p.mu.Lock()
		s := &p.ring[pend.seq&p.mask]
		if s.done {
			ack, err := s.ack, s.err
			*s = ackSlot{}
			p.mu.Unlock()
			if timeout != nil {
				p.timer.Stop()
			}
			if err != nil {
				return nil, err
			}
			p.ack = ack
			return &p.ack, nil
		}
		p.mu.Unlock()
		if timeout == nil {
			// One timer for the publisher, armed only while Run waits (a
			// stopped or reset timer delivers no stale value since Go 1.23).
			left := max(time.Until(pend.sent.Add(p.opts.AckTimeout)), 0)
			if p.timer == nil {
				p.timer = time.NewTimer(left)
			} else {
				p.timer.Reset(left)
			}
			timeout = p.timer.C
		}
		select {
		case <-p.notify:
		case <-timeout:
			p.release(pend.seq)
			return nil, jetstream.ErrAsyncPublishTimeout
		case <-ctx.Done():
			p.timer.Stop()
			p.release(pend.seq)
			return nil, ctx.Err()
		}
	}
}

// release frees seq's slot: a late ack for it is dropped.
func (p *Publisher) release(seq uint64) {
	p.mu.Lock()
	if s := &p.ring[seq&p.mask]; s.seq == seq {
		*s = ackSlot{}
	}
	p.mu.Unlock()
}

// recover re-publishes first and every later failed message of the window in
// order, with new sends held back until the window is empty.
func (p *Publisher) recover(ctx context.Context, first pending, firstErr error) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.opts.Log.Warn().Err(firstErr).Str("subject", first.m.Subject).Str("msg_id", first.m.MsgID).
		Int("inflight", p.Inflight()).Msg("publish failed, re-publishing the window in order")
	p.endOpenBatch()
	defer func() {
		// Every window message was settled: answers still to come for a
		// batch concern released messages only.
		p.mu.Lock()
		clear(p.batches)
		p.hold = false
		p.lastBatched = false // what was sent is settled
		p.mu.Unlock()
	}()
	if err := p.republish(ctx, first.m, firstErr); err != nil {
		return err
	}
	for {
		select {
		case pend := <-p.queue:
			ack, err := p.wait(ctx, pend)
			if err == nil {
				p.acked(pend.m, ack)
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			if err := p.republish(ctx, pend.m, err); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// republish publishes m synchronously until it is stored, rejected or ctx ends.
func (p *Publisher) republish(ctx context.Context, m *Message, err error) error {
	retry := backoff.New(50*time.Millisecond, p.opts.MaxBackoff)
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return nil
		}
		if cause := p.permanent(ctx, m, err); cause != nil {
			if m.deadLetter {
				return fmt.Errorf("dead letter %s on %s cannot be published: %w", m.MsgID, m.Subject, cause)
			}
			return p.reject(ctx, m, cause)
		}
		if p.opts.Retried != nil {
			p.opts.Retried(m, err)
		}
		if attempt == 1 || attempt%20 == 0 {
			p.opts.Log.Warn().Err(err).Str("subject", m.Subject).Str("msg_id", m.MsgID).Int("attempt", attempt).
				Msg("retrying publish")
		}
		if attempt > 1 && !retry.Wait(ctx) {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, p.opts.AckTimeout)
		var ack *jetstream.PubAck
		ack, err = p.js.PublishMsg(pctx, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		cancel()
		if err == nil {
			p.acked(m, ack)
			return nil
		}
	}
}

// permanent returns why m can never be published as asked, or nil when the
// failure err is worth retrying.
func (p *Publisher) permanent(ctx context.Context, m *Message, err error) error {
	if p.opts.Refused != nil {
		if cause := p.opts.Refused(ctx, m, err); cause != nil {
			return cause
		}
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return err
	case errors.Is(err, nats.ErrMaxPayload):
		return err
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		if p.opts.NoStream != nil && p.opts.NoStream(ctx, m.Subject) {
			return err
		}
	}
	return nil
}

func (p *Publisher) reject(ctx context.Context, m *Message, cause error) error {
	if p.opts.Rejected == nil {
		return fmt.Errorf("publish %s (msg id %s): %w", m.Subject, m.MsgID, cause)
	}
	dl, err := p.opts.Rejected(m, cause)
	if err != nil {
		return err
	}
	if dl == nil { // dropped: the owner accounts for it
		p.free(m)
		if m.Owner != nil {
			m.Owner.Settled(m, nil)
		}
		return nil
	}
	dl.Owner, dl.deadLetter, dl.size = m.Owner, true, m.size // it takes m's place in the window
	pctx, cancel := context.WithTimeout(ctx, p.opts.AckTimeout)
	ack, err := p.js.PublishMsg(pctx, &nats.Msg{Subject: dl.Subject, Data: dl.Body, Header: dl.Header})
	cancel()
	if err == nil {
		p.acked(dl, ack)
		return nil
	}
	return p.republish(ctx, dl, err)
}
