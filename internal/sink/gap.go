package sink

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A delivery can be lost on its way: the connection drops, or the server
// restarts, after the consumer counted the message as delivered and before
// it reached this process. The server redelivers it only when its ack wait
// runs out; meanwhile the later events of its key arrive and would be
// applied first. When this process is the consumer's only reader (one
// owner per partition, or a single sink: FillGaps), a gap in the
// consumer's delivery sequence shows the loss, and the messages of the
// consumer's filter that the stream holds between the newest stream
// sequence delivered before the gap and the message after it are read from
// the stream and added first, in stream order. They are settled by their
// later redelivery, which the inbox finds already processed (or dead:
// terminated again), so reading a message that was not lost after all
// costs a lookup, never a second effect.

// GapObserver is implemented by an Observer that counts the deliveries the
// sink found missing and the messages it read from the stream instead.
type GapObserver interface {
	GapFilled(lost, filled int)
}

// gapFill follows one consumer's deliveries in arrival order (the pull
// loop's goroutine).
type gapFill struct {
	name    string   // stream
	filters []string // the consumer's filter subjects; "" is the whole stream
	s       *Sink

	known      bool   // lastCons and maxStream are set
	suspicious bool   // a loss may have left no gap in the delivery sequence
	lastCons   uint64 // consumer sequence of the newest delivery seen
	maxStream  uint64 // newest stream sequence delivered
	stream     jetstream.Stream
	warned     bool
}

// newGapFill returns nil when gaps are not filled: FillGaps off, no
// JetStream handle, or the stream unknown.
func (s *Sink) newGapFill(stream string, filters []string) *gapFill {
	if !s.fillGaps || s.js == nil || stream == "" {
		return nil
	}
	return &gapFill{name: stream, filters: filters, s: s}
}

// start sets where deliveries stand when this process begins to read the
// consumer: at its ack floor. Whatever was delivered after it and is not
// acknowledged belongs to an earlier reader (a process that crashed, or
// handed the partition over with a delivery lost on its way) and is
// redelivered only after its ack wait; so when something is pending, the
// first new message is checked against the stream, and the pending messages
// before it are read and applied first (those acknowledged out of order
// are found processed by the inbox).
func (g *gapFill) start(info *jetstream.ConsumerInfo) {
	if g == nil || info == nil {
		return
	}
	g.known, g.lastCons, g.maxStream = true, info.AckFloor.Consumer, info.AckFloor.Stream
	g.suspicious = info.NumAckPending > 0
}

// suspect notes that deliveries may have been lost without a gap in the
// delivery sequence to show it: a pull failed (the connection dropped, the
// server shut down), and a server that restarts may number deliveries from
// its stored state. The next message beyond the newest stream sequence seen
// is then checked against the stream whatever its delivery sequence.
func (g *gapFill) suspect() {
	if g != nil {
		g.suspicious = true
	}
}

// before returns, in stream order, the messages lost before m: the
// consumer's messages in the stream after the newest one delivered here and
// before m, when the consumer delivered something in between that never
// arrived (a jump in the delivery sequence, at most that many), or when a
// loss is suspected (at most what this process may hold).
func (g *gapFill) before(ctx context.Context, m Msg) []Msg {
	if g == nil {
		return nil
	}
	meta, err := m.Metadata()
	if err != nil {
		return nil
	}
	c, seq := meta.Sequence.Consumer, meta.Sequence.Stream
	if !g.known {
		g.known, g.lastCons, g.maxStream = true, c, seq
		return nil
	}
	var lost uint64
	switch {
	case c > g.lastCons+1:
		lost = c - g.lastCons - 1
	case c <= g.lastCons:
		// The consumer was made again, or a restarted server numbers
		// deliveries from its stored state: the sequence cannot tell a
		// loss any more, the stream can.
		g.s.log.Info().Uint64("consumer_seq", c).Uint64("last_consumer_seq", g.lastCons).Uint64("stream_seq", seq).
			Uint64("max_stream_seq", g.maxStream).Msg("the consumer's delivery sequence went back (consumer recreated or server state restored); checking the next new message against the stream")
		g.suspicious = true
	}
	g.lastCons = c
	if seq <= g.maxStream {
		return nil // a redelivery: its first delivery was checked
	}
	from := g.maxStream + 1
	g.maxStream = seq
	suspicious := g.suspicious
	g.suspicious = false
	if seq == from || lost == 0 && !suspicious {
		return nil
	}
	limit := lost
	if suspicious {
		limit = max(limit, uint64(g.s.maxHeld))
	}
	var out []Msg
	for uint64(len(out)) < limit {
		next, err := g.next(ctx, from, seq)
		if err != nil {
			g.warn(err, lost)
			break
		}
		if next == nil {
			break
		}
		out = append(out, next)
		from = next.seq + 1
	}
	if len(out) == 0 {
		if lost > 0 {
			g.s.log.Info().Uint64("lost_deliveries", lost).Uint64("from_seq", g.maxStream).Uint64("before_seq", seq).
				Msg("deliveries lost on the way were redeliveries: nothing to read from the stream")
		}
		return nil
	}
	if o, ok := g.s.obs.(GapObserver); ok {
		o.GapFilled(int(max(lost, uint64(len(out)))), len(out))
	}
	g.s.log.Warn().Uint64("lost_deliveries", max(lost, uint64(len(out)))).Int("read_from_stream", len(out)).
		Uint64("first_seq", out[0].(*storedMsg).seq).Uint64("before_seq", seq).Bool("after_a_failed_pull", suspicious).
		Msg("deliveries lost on the way; the messages missing before the next one were read from the stream and go first")
	return out
}

// next is the consumer's first message in the stream at or after from and
// before limit, nil when there is none.
func (g *gapFill) next(ctx context.Context, from, limit uint64) (*storedMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if g.stream == nil {
		st, err := g.s.js.Stream(ctx, g.name)
		if err != nil {
			return nil, err
		}
		g.stream = st
	}
	var best *jetstream.RawStreamMsg
	for _, f := range g.filters {
		if f == "" {
			f = ">" // the whole stream: the next message, skipping deleted ones
		}
		raw, err := g.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(f))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return nil, err
		}
		if best == nil || raw.Sequence < best.Sequence {
			best = raw
		}
	}
	g.warned = false // the stream answers: a later failure is news again
	if best == nil || best.Sequence >= limit {
		return nil, nil
	}
	return &storedMsg{raw: best, stream: g.name, seq: best.Sequence}, nil
}

func (g *gapFill) warn(err error, lost uint64) {
	if g.warned {
		return
	}
	g.warned = true
	g.s.log.Warn().Err(err).Uint64("lost_deliveries", lost).
		Msg("deliveries lost on the way, and the stream cannot be read to apply the missing messages first: they are applied when the server redelivers them, after the ack wait, possibly after later events of their keys (the sink needs $JS.API.STREAM.INFO and STREAM.MSG.GET or DIRECT.GET on the stream)")
}

// storedMsg is a message read from the stream rather than delivered: it
// stands for a lost delivery, whose redelivery settles it; its own replies
// do nothing.
type storedMsg struct {
	raw    *jetstream.RawStreamMsg
	stream string
	seq    uint64
	once   sync.Once
	hdr    nats.Header
}

var _ Msg = (*storedMsg)(nil)

func (m *storedMsg) Data() []byte { return m.raw.Data }
func (m *storedMsg) Headers() nats.Header {
	m.once.Do(func() {
		m.hdr = m.raw.Header
		if m.hdr == nil {
			m.hdr = nats.Header{}
		}
	})
	return m.hdr
}
func (m *storedMsg) Subject() string { return m.raw.Subject }
func (m *storedMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, NumDelivered: 1,
		Timestamp: m.raw.Time, Stream: m.stream}, nil
}
func (m *storedMsg) InProgress() error                { return nil }
func (m *storedMsg) Nak() error                       { return nil }
func (m *storedMsg) NakWithDelay(time.Duration) error { return nil }
func (m *storedMsg) Term() error                      { return nil }
func (m *storedMsg) Ack() error                       { return nil }
func (m *storedMsg) DoubleAck(context.Context) error  { return nil }
