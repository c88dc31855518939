package publish

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Fast batch publishing (nats-server 2.14+, streams with allow_batched).
//
// When the caller has a burst ready (Message.Ahead), consecutive window
// messages form one fast batch: each reply subject carries
// the batch id and the message's position in the batch, and the server
// answers with one flow-control ack every few hundred stored messages instead
// of a PubAck per message. The last message of a burst commits the batch and
// its PubAck confirms the tail. Short bursts (fewer than BatchMinAhead
// messages behind the first) are published with an ack each: a batch costs
// the server a start and a commit, and at a few messages per burst acks one by
// one come back sooner.
//
// Batches run in "gap: fail" mode: the server stores nothing of a batch
// after a message it did not store (refused for load, too large, lost on
// the way, or any other error), and ends the batch there. So a flow ack for
// position k means positions 1..k are stored, and the PubAck that ends a
// batch counts the positions stored; nothing else confirms a message, and
// an error or gap report only hastens what the acks already say. (In "gap:
// ok" mode a flow ack means only that some of 1..k were stored, and a
// refused message is overtaken by the ones behind it.) Every position after
// the last one confirmed is failed and republished by Run's in-order
// recovery, from the first, one by one; until that recovery has run, new
// messages are held back and go through it too, so nothing newer is stored
// before them, and the stream order stays the submission order. Acks are
// cumulative, so a lost flow ack costs nothing; the ack subscription has no
// pending limit, so no report is dropped on the client side.
//
// A refused message (an error response rather than a report: refused for
// load, too large) may leave the batch open on the server with no PubAck to
// come, so the unconfirmed messages before it fail with it and are
// republished too; the server stores again only those it had not stored,
// answering the others as duplicates. An end marker at the refused position
// then closes the batch on the server.
//
// Duplicates inside a batch are dropped without a per-message report. So the
// publisher starts with single acks, which report each duplicate, and uses
// batches once a message was stored that was not a duplicate (a restarted
// relay re-sends what it may have published before).
//
// The reply subject is <inbox>.<batch id>.<flow>.fail.<position>.<op>.$FI.

// Reply subject operations of a fast batch.
const (
	batchOpStart  = "0"
	batchOpAppend = "1"
	batchOpCommit = "2"
	batchOpEnd    = "3" // commit, this message is only the end marker and is not stored
	batchSuffix   = ".$FI"
	maxBatchFlow  = 500 // the server acks at most every 500 messages
	// maxReplySuffix bounds what follows the inbox prefix in a reply
	// subject: a batch id (22 + 13), flow, gap mode, position and op.
	maxReplySuffix = 72
)

// BatchMinAhead is how many messages must be ready behind one for it to open
// a fast batch.
const BatchMinAhead = 16

// JetStream error codes that mean the stream (or server) does not take fast
// batches at all: batch publish disabled, invalid pattern, invalid batch id.
const (
	errCodeBatchDisabled  = 10205
	errCodeBatchPattern   = 10206
	errCodeBatchInvalidID = 10207
)

// Errors of window messages that were not stored; all are republished.
var (
	errBatchEnded       = errors.New("fast batch ended before this message")
	errBatchGap         = errors.New("the server did not receive this fast batch message")
	errBatchUnconfirmed = errors.New("a later message of this fast batch was refused before this one was confirmed")
	errHeldBack         = errors.New("held back until an earlier failed publish is republished")
)

// batch is one fast batch; guarded by Publisher.mu.
type batch struct {
	id      string
	subject string // of its first message: where the end marker goes
	base    uint64 // window sequence of batch position 1
	sent    uint64 // positions 1..sent were sent
	acked   uint64 // positions 1..acked are stored
	closed  bool   // committed or broken: nothing more is sent in it
	failed  bool   // a position failed: the server stores nothing after it
}

// batching reports whether m may go into a fast batch. p.mu is held.
func (p *Publisher) batching(m *Message) bool {
	return p.opts.Batch != nil && !p.noBatch && !p.replay && !m.deadLetter && p.opts.Batch(m.Subject)
}

// replyFor returns the reply subject for the window message seq, opening,
// extending or committing a fast batch as m.Ahead asks. When an open batch
// has to end first (m cannot join it), end is its end marker, to be sent
// before m. p.mu is held.
func (p *Publisher) replyFor(m *Message, seq uint64) (reply string, end *nats.Msg) {
	b := p.open
	ok := p.batching(m)
	if b != nil && (b.closed || !ok) {
		if !b.closed {
			end = p.endMarker(b, b.sent+1)
		}
		p.open, b = nil, nil
	}
	if b == nil {
		if !ok || m.Ahead < BatchMinAhead {
			p.lastBatched = false
			return p.prefix + strconv.FormatUint(seq, 36), end
		}
		p.batchN++
		b = &batch{id: p.batchID + strconv.FormatUint(p.batchN, 36), subject: m.Subject, base: seq}
		p.batches[b.id] = b
		p.open = b
	}
	b.sent++
	p.batched.Add(1)
	p.lastBatched = true
	op := batchOpAppend
	if b.sent == 1 {
		op = batchOpStart
	}
	if m.Ahead <= 0 {
		op = batchOpCommit
		b.closed, p.open = true, nil
	}
	return p.batchReply(b, b.sent, op), end
}

// endMarker closes b and returns the message at position pos that commits
// it on the server (not stored; its PubAck confirms b's tail up to pos-1).
// p.mu is held.
func (p *Publisher) endMarker(b *batch, pos uint64) *nats.Msg {
	b.closed = true
	return &nats.Msg{Subject: b.subject, Reply: p.batchReply(b, pos, batchOpEnd)}
}

func (p *Publisher) batchReply(b *batch, pos uint64, op string) string {
	buf := p.replyBuf[:0]
	buf = append(buf, p.prefix...)
	buf = append(buf, b.id...)
	buf = append(buf, '.')
	buf = append(buf, p.flow...)
	buf = append(buf, ".fail."...)
	buf = strconv.AppendUint(buf, pos, 10)
	buf = append(buf, '.')
	buf = append(buf, op...)
	buf = append(buf, batchSuffix...)
	p.replyBuf = buf
	return string(buf)
}

// endOpenBatch commits the open batch, if any, so that its unacknowledged
// tail gets confirmed while no new message follows (recovery holds sends
// back). sendMu is held.
func (p *Publisher) endOpenBatch() {
	p.mu.Lock()
	var end *nats.Msg
	if b := p.open; b != nil && !b.closed {
		end = p.endMarker(b, b.sent+1)
	}
	p.open = nil
	p.mu.Unlock()
	if end != nil {
		if err := p.nc.PublishMsg(end); err != nil {
			// The tail's acks then time out and recovery republishes it.
			p.opts.Log.Warn().Err(err).Msg("could not end the open fast batch; its unacknowledged messages will time out and be republished")
		}
	}
}

// parseBatchReply splits <id>.<flow>.<gap>.<position>.<op>.$FI.
func parseBatchReply(rest string) (id string, pos uint64, op string, ok bool) {
	rest, ok = strings.CutSuffix(rest, batchSuffix)
	if !ok {
		return "", 0, "", false
	}
	id, rest, ok = strings.Cut(rest, ".")
	if !ok {
		return "", 0, "", false
	}
	_, rest, _ = strings.Cut(rest, ".") // flow
	_, rest, _ = strings.Cut(rest, ".") // gap mode
	posText, op, ok := strings.Cut(rest, ".")
	if !ok {
		return "", 0, "", false
	}
	pos, err := strconv.ParseUint(posText, 10, 64)
	return id, pos, op, err == nil && pos > 0
}

// onBatchAck handles what the server sends to a fast batch reply subject: a
// flow ack, a gap or error report, an error response, or the PubAck that
// ends the batch. It returns an end marker to send, if the batch needs one.
// p.mu is held.
func (p *Publisher) onBatchAck(msg *nats.Msg, rest string) (end *nats.Msg) {
	id, pos, op, ok := parseBatchReply(rest)
	if !ok {
		return nil
	}
	b := p.batches[id]
	if b == nil {
		return nil // already finished (an end marker's answer, or after a recovery)
	}
	data := msg.Data
	switch {
	case len(data) == 0:
		if msg.Header.Get("Status") == "503" {
			p.endBatch(b, pos, nats.ErrNoResponders)
		} else {
			p.endBatch(b, pos, jetstream.ErrInvalidJSAck)
		}
	case bytes.Contains(data, []byte(`"type":"ack"`)):
		if k, ok := jsonUint(data, `"seq":`); ok {
			p.batchStored(b, k)
		}
	case bytes.Contains(data, []byte(`"type":"gap"`)):
		// Positions from last_seq on never reached the server, which stores
		// nothing more of the batch; its PubAck confirms what precedes.
		from, ok := jsonUint(data, `"last_seq":`)
		if !ok {
			from = b.acked + 1
		}
		p.endBatch(b, max(from, b.acked+1), errBatchGap)
	case bytes.Contains(data, []byte(`"type":"err"`)):
		// The message at seq was refused and the batch ends before it.
		var r struct {
			Seq   uint64              `json:"seq"`
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(data, &r); err != nil || r.Seq == 0 || r.Error == nil {
			p.endBatch(b, b.acked+1, fmt.Errorf("%w: %s", jetstream.ErrInvalidJSAck, data))
			return nil
		}
		p.endBatch(b, max(r.Seq, b.acked+1), r.Error)
	default:
		var ack jetstream.PubAck
		err := p.parseAck(msg, &ack)
		var apiErr *jetstream.APIError
		switch {
		case errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeBatchDisabled ||
			apiErr.ErrorCode == errCodeBatchPattern || apiErr.ErrorCode == errCodeBatchInvalidID):
			p.stopBatching(b.subject, apiErr)
			p.endBatch(b, pos, err)
		case err != nil:
			end = p.refused(b, pos, op == batchOpEnd, err)
		case bytes.Contains(data, []byte(`"batch":`)):
			count, _ := jsonUint(data, `"count":`)
			p.batchStored(b, count)
			if b.sent > b.acked {
				p.endBatch(b, b.acked+1, errBatchEnded)
			}
			b.closed = true
			delete(p.batches, id)
		default:
			// A PubAck of the message alone: this server does not know fast
			// batches and stores each message as a plain publish.
			p.stopBatching(b.subject, errors.New("the server answered a fast batch message with a plain ack"))
			p.fill(b.base+pos-1, &ack, nil)
		}
	}
	return nil
}

// refused handles an error response for the message at position pos of b.
// The server may not have ended the batch (it never saw the message, and
// perhaps no later one either), so no PubAck may come for the messages
// before pos that are not confirmed yet: they fail too, with pos and every
// later one, and Run's recovery republishes them in order (those the server
// did store come back as duplicates). The end marker returned, at pos,
// commits the batch on the server if it is still open, so that it does not
// linger until the server's batch timeout. p.mu is held.
func (p *Publisher) refused(b *batch, pos uint64, marker bool, err error) *nats.Msg {
	first := !b.failed
	p.endBatch(b, pos, err)
	for q := b.acked + 1; q < pos && q <= b.sent; q++ {
		p.fill(b.base+q-1, nil, errBatchUnconfirmed)
	}
	if !first || marker || pos > b.sent {
		return nil
	}
	return p.endMarker(b, pos)
}

// stopBatching turns fast batches off for good. p.mu is held.
func (p *Publisher) stopBatching(subject string, why error) {
	if p.noBatch {
		return
	}
	p.noBatch = true
	p.opts.Log.Warn().Err(why).Str("subject", subject).
		Msg("JetStream does not take fast batch publishes here; publishing one by one (nats-server 2.14+ and allow_batched on the stream enable them)")
}

// batchStored marks positions up to k of b as stored. p.mu is held.
func (p *Publisher) batchStored(b *batch, k uint64) {
	k = min(k, b.sent)
	ack := jetstream.PubAck{Stream: p.stream}
	for pos := b.acked + 1; pos <= k; pos++ {
		p.fill(b.base+pos-1, &ack, nil)
	}
	b.acked = max(b.acked, k)
}

// endBatch fails position pos of b with err and every later one sent with
// errBatchEnded: the batch is over on the server, which stores nothing more
// of it. p.mu is held.
func (p *Publisher) endBatch(b *batch, pos uint64, err error) {
	b.closed, b.failed = true, true
	if pos == 0 || pos > b.sent {
		return
	}
	p.fill(b.base+pos-1, nil, err)
	for q := pos + 1; q <= b.sent; q++ {
		p.fill(b.base+q-1, nil, errBatchEnded)
	}
}

// BatchSupported reports whether a nats-server of version (as the client
// reports it, "2.14.0") takes fast batch publishes.
func BatchSupported(version string) bool {
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(strings.TrimLeft(minor, "v"))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > 2 || (ma == 2 && mi >= 14)
}

// BatchSubjects returns an Options.Batch for a stream: subjects it captures
// may be batched. Nil when the stream does not allow fast batches or the
// server is too old for them. The function is not safe for concurrent use
// (the Publisher calls it under its lock).
func BatchSubjects(info *jetstream.StreamInfo, serverVersion string) func(subject string) bool {
	if info == nil || !info.Config.AllowBatchPublish || !BatchSupported(serverVersion) {
		return nil
	}
	return BatchFilter(info.Config.Subjects)
}

// BatchFilter returns an Options.Batch that batches the subjects filters
// match. Like BatchSubjects' result, it is not safe for concurrent use.
func BatchFilter(filters []string) func(subject string) bool {
	filters = slices.Clone(filters)
	seen := map[string]bool{} // subjects are few (one per destination); bounded anyway
	return func(subject string) bool {
		if ok, found := seen[subject]; found {
			return ok
		}
		ok := slices.ContainsFunc(filters, func(f string) bool { return envelope.Covers(f, subject) })
		if len(seen) >= 4096 {
			clear(seen)
		}
		seen[subject] = ok
		return ok
	}
}
