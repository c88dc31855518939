package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
)

// Msg is what the sink needs of a delivered message: its content, its
// delivery metadata and the replies that settle it. A jetstream.Msg has it;
// a *nats.Msg delivered to a plain subscription gets it from natsMsg.
type Msg interface {
	Data() []byte
	Headers() nats.Header
	Subject() string
	Metadata() (*jetstream.MsgMetadata, error)
	InProgress() error
	Nak() error
	NakWithDelay(delay time.Duration) error
	Term() error
	Ack() error
	DoubleAck(ctx context.Context) error
}

var _ Msg = jetstream.Msg(nil)

// natsMsg adapts a message of the durable consumer received on a core NATS
// subscription. Every reply goes to the message's $JS.ACK reply subject
// (+ACK, -NAK, -NAK {"delay":…}, +WPI, +TERM), which is also where the
// metadata is parsed from; none of it is a JetStream API call.
type natsMsg struct{ m *nats.Msg }

func (n natsMsg) Data() []byte                           { return n.m.Data }
func (n natsMsg) Headers() nats.Header                   { return n.m.Header }
func (n natsMsg) Subject() string                        { return n.m.Subject }
func (n natsMsg) InProgress() error                      { return n.m.InProgress() }
func (n natsMsg) Nak() error                             { return n.m.Nak() }
func (n natsMsg) NakWithDelay(delay time.Duration) error { return n.m.NakWithDelay(delay) }
func (n natsMsg) Term() error                            { return n.m.Term() }
func (n natsMsg) Ack() error                             { return n.m.Ack() }
func (n natsMsg) DoubleAck(ctx context.Context) error    { return n.m.AckSync(nats.Context(ctx)) }

func (n natsMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := n.m.Metadata()
	if err != nil {
		return nil, err
	}
	return &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered, NumPending: md.NumPending, Timestamp: md.Timestamp,
		Stream: md.Stream, Consumer: md.Consumer, Domain: md.Domain,
	}, nil
}

// Source is where a Sink's messages come from: JetStreamPull, RestrictedPull
// or Push.
type Source interface {
	// consume adds the messages delivered to this process to d until ctx
	// ends. It returns an error only when consuming cannot go on; nothing is
	// added after it returns.
	consume(ctx context.Context, s *Sink, d *dispatcher) error
	// ready reports whether messages can currently arrive.
	ready() error
	// ackWait is the consumer's redelivery timer when the source knows it
	// (0 when not).
	ackWait() time.Duration
}

// JetStreamPull consumes a pull consumer through the jetstream client, which
// looked the consumer up (a JetStream API call) when the handle was made.
func JetStreamPull(c jetstream.Consumer) Source { return &jsPull{cons: c} }

type jsPull struct {
	cons  jetstream.Consumer
	bound atomic.Bool // the last pull reached the consumer
}

func (p *jsPull) ready() error           { return boundErr(&p.bound) }
func (p *jsPull) ackWait() time.Duration { return redeliveryTimer(p.cons.CachedInfo()) }

func (p *jsPull) consume(ctx context.Context, s *Sink, d *dispatcher) error {
	var gaps *gapFill
	if s.fillGaps {
		// Where deliveries stand now: a delivery lost before the first one
		// this process receives is found too (gapFill.start).
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := p.cons.Info(ictx)
		cancel()
		if err != nil {
			info = p.cons.CachedInfo()
		}
		if info != nil {
			gaps = s.newGapFill(info.Stream, filterSubjects(info.Config))
			gaps.start(info)
		}
	}
	return s.pullLoop(ctx, d, &p.bound, gaps, func(n int, add func(Msg)) error {
		batch, err := p.cons.Fetch(n, jetstream.FetchMaxWait(s.fetchWait))
		if err == nil {
			for m := range batch.Messages() {
				add(m)
			}
			err = batch.Error()
		}
		switch {
		case err == nil, errors.Is(err, jetstream.ErrNoMessages), errors.Is(err, context.DeadlineExceeded):
			return nil
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			return fmt.Errorf("%w: %w", ErrConsumerMissing, err)
		}
		return err
	})
}

// RestrictedPull consumes the durable pull consumer stream/durable without
// any JetStream API call but the pull requests themselves
// ($JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>): the handle is bound without
// a consumer lookup, replies arrive on a private _INBOX subscription, and
// messages are settled on their $JS.ACK reply subjects. Nothing about the
// consumer is checked: a missing consumer shows as pull requests nobody
// answers, reported by Run as ErrConsumerMissing.
func RestrictedPull(nc *nats.Conn, stream, durable, filter string) Source {
	return &restrictedPull{nc: nc, stream: stream, durable: durable, filter: filter}
}

type restrictedPull struct {
	nc                      *nats.Conn
	stream, durable, filter string
	bound                   atomic.Bool
}

func (p *restrictedPull) ready() error           { return boundErr(&p.bound) }
func (p *restrictedPull) ackWait() time.Duration { return 0 }

func (p *restrictedPull) consume(ctx context.Context, s *Sink, d *dispatcher) error {
	js, err := p.nc.JetStream()
	if err != nil {
		return fmt.Errorf("jetstream context: %w", err)
	}
	sub, err := js.PullSubscribe(p.filter, p.durable, nats.Bind(p.stream, p.durable), nats.SkipConsumerLookup())
	if err != nil {
		return fmt.Errorf("bind consumer %s on stream %s: %w", p.durable, p.stream, err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // bound, not created: unsubscribing never deletes the consumer
	// Idle heartbeats on each pull request tell a server that answers but has
	// nothing to deliver from one that does not answer at all (no permission
	// to pull, or the connection is stuck): the second fails the fetch.
	opts := []nats.PullOpt{nats.MaxWait(s.fetchWait)}
	if hb := s.fetchWait / 4; hb >= 10*time.Millisecond {
		opts = append(opts, nats.PullHeartbeat(hb))
	}
	return s.pullLoop(ctx, d, &p.bound, s.newGapFill(p.stream, []string{p.filter}), func(n int, add func(Msg)) error {
		msgs, err := sub.Fetch(n, opts...)
		for _, m := range msgs {
			add(natsMsg{m})
		}
		switch {
		case err == nil, errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
			return nil
		case errors.Is(err, nats.ErrConsumerDeleted), errors.Is(err, nats.ErrNoResponders):
			// Without a consumer nothing subscribes to its pull subject.
			return fmt.Errorf("%w: %w", ErrConsumerMissing, err)
		}
		return err
	})
}

// pullLoop pulls messages into the dispatcher until ctx ends, never holding
// more than maxHeld messages, and about maxHeldBytes at most: pull(n, add)
// asks for at most n messages and passes each one to add. pull returns nil
// when the consumer answered (with messages or none), an error wrapping
// ErrConsumerMissing when there is no consumer to answer, any other error
// when the pull failed. pullLoop returns an error only when the consumer
// stays missing. With gaps, the messages of deliveries lost before a message
// are added before it (gap.go).
//
// The byte bound is kept by counting: a pull asks for as many messages as
// fit in the room left if each were as large as the largest one of the
// last pull; when not even one fits, it waits until a held message is settled,
// and when nothing is held, it pulls one message alone, so that a message
// larger than the bound cannot hold up the consumer. Only a pull that
// brings messages larger than those of the pull before can go over the
// bound. The server's own byte limit on a pull request (max_bytes) is not
// used: on a clustered consumer its "batch completed" answer can reach the
// client before the messages it completes, which the client then drops, so
// they come back only after the ack wait.
func (s *Sink) pullLoop(ctx context.Context, d *dispatcher, bound *atomic.Bool, gaps *gapFill, pull func(n int, add func(Msg)) error) error {
	limit := s.maxHeld - s.batchSize
	retry := backoff.New(250*time.Millisecond, 5*time.Second)
	gone := 0
	// largest is the largest message of the last pull that brought any:
	// the size the next pull expects, which follows the traffic down after
	// a burst of large messages.
	var largest, pulled int64
	admit := func(m Msg) {
		if err := s.part.admit(m); err != nil {
			s.halt(err)
			m.Nak() //nolint:errcheck // the sink stops; unacked, it is redelivered after the ack wait anyway
			return
		}
		it := s.newItem(m)
		pulled = max(pulled, it.size)
		d.add(it)
	}
	add := func(m Msg) {
		for _, lost := range gaps.before(ctx, m) {
			admit(lost)
		}
		admit(m)
	}
	for ctx.Err() == nil {
		// Pull once there is room for a message as large as the largest
		// of the last pull (up to a quarter of the bound).
		want := max(1, min(largest, s.maxHeldBytes/4))
		if !d.waitRoom(ctx, func(n int, b int64) bool {
			return n <= limit && (s.maxHeldBytes <= 0 || s.maxHeldBytes-b >= want)
		}) || !s.part.waitOwning(ctx) {
			return nil
		}
		n := s.batchSize
		if held, heldBytes := d.usage(); s.maxHeldBytes > 0 && largest > 0 {
			switch fit := (s.maxHeldBytes - heldBytes) / largest; {
			case fit >= int64(n):
			case fit >= 1:
				n = int(fit)
			case held == 0:
				n = 1 // larger than the bound on its own: alone
			default:
				// Not even one as large as the largest fits: wait until a
				// held message is settled.
				if !d.waitRoom(ctx, func(n int, b int64) bool { return n < held || b < heldBytes }) {
					return nil
				}
				continue
			}
		}
		pulled = 0
		err := pull(n, add)
		if pulled > 0 {
			largest = pulled
		}
		if err == nil {
			bound.Store(true)
			retry.Reset()
			gone = 0
			continue
		}
		bound.Store(false)
		gaps.suspect()
		// Five misses in a row span about four seconds of backoff: longer
		// than a consumer leader election, during which pull requests find
		// no responder either.
		if errors.Is(err, ErrConsumerMissing) {
			if gone++; gone >= 5 {
				return fmt.Errorf("consume: %w", err)
			}
		}
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Dur("retry_in", retry.Delay()).Msg("fetch failed, retrying")
		}
		retry.Wait(ctx)
	}
	return nil
}

// waitRoom waits until room(messages held, their bytes) holds, checking
// again whenever a message is settled; false if ctx ends.
func (d *dispatcher) waitRoom(ctx context.Context, room func(n int, bytes int64) bool) bool {
	for {
		if room(d.usage()) {
			return true
		}
		select {
		case <-d.room:
		case <-ctx.Done():
			return false
		}
	}
}

// filterSubjects is what a consumer delivers: its filter subjects, or the
// whole stream ("").
func filterSubjects(c jetstream.ConsumerConfig) []string {
	switch {
	case len(c.FilterSubjects) > 0:
		return c.FilterSubjects
	case c.FilterSubject != "":
		return []string{c.FilterSubject}
	}
	return []string{""}
}

func boundErr(b *atomic.Bool) error {
	if !b.Load() {
		return errors.New("consumer not reachable yet")
	}
	return nil
}

// Push consumes a durable push consumer by subscribing to its deliver
// subject in queue group group, so that several sink processes share it.
// No JetStream API call is made: messages arrive because the consumer
// exists, and are settled on their $JS.ACK reply subjects. The server
// delivers at most the consumer's MaxAckPending unacknowledged messages to
// the whole group, which is what bounds the messages one process holds.
//
// A missing consumer cannot be told from an idle one: nothing arrives.
func Push(nc *nats.Conn, deliverSubject, group string) Source {
	return &push{nc: nc, subject: deliverSubject, group: group}
}

type push struct {
	nc             *nats.Conn
	subject, group string
	sub            atomic.Pointer[nats.Subscription]
}

func (p *push) ackWait() time.Duration { return 0 }

func (p *push) ready() error {
	sub := p.sub.Load()
	if sub == nil || !sub.IsValid() {
		return fmt.Errorf("not subscribed to %s", p.subject)
	}
	if st := p.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats %s", st)
	}
	return nil
}

func (p *push) consume(ctx context.Context, s *Sink, d *dispatcher) error {
	sub, err := p.nc.QueueSubscribe(p.subject, p.group, func(m *nats.Msg) {
		switch {
		case isStatus(m):
			p.control(s, m)
		case !strings.HasPrefix(m.Reply, "$JS.ACK."):
			// Not a delivery of the consumer: it could not be acknowledged,
			// and replying to it would publish where the sink has no business.
			s.log.Warn().Str("subject", m.Subject).Msg("ignoring a message on the deliver subject that JetStream did not deliver")
		default:
			d.add(s.newItem(natsMsg{m}))
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s (queue %s): %w", p.subject, p.group, err)
	}
	// The server refuses a subscription asynchronously; its answer precedes
	// the PONG of a flush.
	if err := p.nc.FlushTimeout(5 * time.Second); err == nil {
		if last := p.nc.LastError(); errors.Is(last, nats.ErrPermissionViolation) &&
			strings.Contains(last.Error(), strconv.Quote(p.subject)) {
			sub.Unsubscribe() //nolint:errcheck // refused by the server anyway
			return fmt.Errorf("subscribe to %s (queue %s): %w", p.subject, p.group, last)
		}
	}
	p.sub.Store(sub)
	<-ctx.Done()

	// Stop taking work: the server stops delivering here, and what it sent
	// before still reaches the dispatcher, to be handed back with the rest.
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil {
		sub.Unsubscribe() //nolint:errcheck // draining failed; messages not handed back are redelivered after the ack wait
		return nil
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		s.log.Warn().Str("subject", p.subject).Msg("draining the push subscription took too long; unsubscribing")
		sub.Unsubscribe() //nolint:errcheck // as above
	}
	return nil
}

// isStatus reports a JetStream control message: no body and a Status header
// (idle heartbeat or flow control, 100).
func isStatus(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") != ""
}

// control answers flow control, which a consumer provisioned by the sink
// never asks for (FlowControl is off), but one set up by hand may: without
// an answer the server stops delivering.
func (p *push) control(s *Sink, m *nats.Msg) {
	var to string
	switch {
	case m.Reply != "":
		to = m.Reply // flow control request
	case m.Header.Get("Nats-Consumer-Stalled") != "":
		to = m.Header.Get("Nats-Consumer-Stalled") // heartbeat of a stalled consumer
	default:
		return // idle heartbeat
	}
	if err := p.nc.Publish(to, nil); err != nil {
		s.log.Warn().Err(err).Msg("cannot answer flow control")
	}
}
