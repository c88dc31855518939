package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Message is what the audit needs of one stored message: no body.
type Message struct {
	Seq     uint64
	Time    time.Time // when the stream stored it
	Subject string
	MsgID   string // Nats-Msg-Id, "" when absent
	Pos     envelope.Position
	HasPos  bool // Bridge-Commit-LSN and Bridge-Tx-Index present and well formed
}

// scanRange says which messages to read.
type scanRange struct {
	stream   string
	subjects []string  // consumer filter; empty = the whole stream
	from     time.Time // zero = from the first message
	afterSeq uint64    // > 0: only messages after this sequence (a second look at the tail)
	page     int
}

// fetchWait bounds one fetch; a stream that has messages pending answers long
// before it.
const fetchWait = 5 * time.Second

// scan calls fn with the messages of r, a page at a time, in stream order, up
// to the stream's last sequence when scan started. It returns that sequence,
// from which a later scan of the tail may start.
func scan(ctx context.Context, js jetstream.JetStream, r scanRange, fn func([]Message) error) (uint64, error) {
	st, err := js.Stream(ctx, r.stream)
	if err != nil {
		return 0, fmt.Errorf("look up stream %s: %w", r.stream, err)
	}
	last := st.CachedInfo().State.LastSeq
	if last <= r.afterSeq {
		return max(last, r.afterSeq), nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: r.subjects, HeadersOnly: true,
		InactiveThreshold: time.Minute}
	switch {
	case r.afterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.afterSeq+1
	case !r.from.IsZero():
		from := r.from
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	c, err := st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", r.stream, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", r.stream, err)
	}
	if info.NumPending == 0 {
		return last, nil
	}
	page := make([]Message, 0, r.page)
	// A fetch waits until its batch is full or fetchWait passes: ask for no
	// more than are pending, or the last page of every audit would wait.
	pending := info.NumPending
	for done := false; !done; {
		batch, err := c.Fetch(int(min(uint64(r.page), max(pending, 1))), jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return 0, fmt.Errorf("read stream %s: %w", r.stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return 0, fmt.Errorf("read stream %s: %w", r.stream, err)
			}
			if meta.Sequence.Stream > last {
				done = true
				break
			}
			h := m.Headers()
			msg := Message{Seq: meta.Sequence.Stream, Time: meta.Timestamp, Subject: m.Subject(),
				MsgID: h.Get(envelope.HeaderMsgID)}
			msg.Pos, msg.HasPos = envelope.ParsePosition(h)
			page = append(page, msg)
			pending = meta.NumPending
			if meta.NumPending == 0 || meta.Sequence.Stream == last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return 0, fmt.Errorf("read stream %s: %w", r.stream, err)
		}
		if got == 0 && !done {
			// Nothing within fetchWait although messages were pending: they
			// were deleted (retention, purge) since; ask again.
			info, err := c.Info(ctx)
			if err != nil {
				return 0, fmt.Errorf("read stream %s: %w", r.stream, err)
			}
			pending = info.NumPending
			done = pending == 0
		}
		if len(page) > 0 {
			if err := fn(page); err != nil {
				return 0, err
			}
			page = page[:0]
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
	return last, nil
}
