package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// DefaultPage is how many messages are read and copied at a time.
const DefaultPage = 1000

// emptyWait is how long one fetch waits for its first message. A fetch that
// gets nothing in that time means nothing (more) matches the filter: the
// consumer is on the server beside the stream, so a matching message is
// delivered within milliseconds.
const emptyWait = 3 * time.Second

// message is what the audits need of one stored message.
type message struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Header  nats.Header
}

// MsgID returns the message's Nats-Msg-Id, in any letter case: publishers
// that write headers themselves (the Ruby gem) send nats-msg-id, and NATS
// headers are case-sensitive.
func msgID(h nats.Header) string {
	if v := h.Get(envelope.HeaderMsgID); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, envelope.HeaderMsgID) {
			return v[0]
		}
	}
	return ""
}

// readStream calls page with the headers of the messages of stream on
// filters, from since (zero: the first message) up to the stream's last
// sequence when the read began, at most size messages at a time. The slice
// passed to page is reused.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, filters []string, since time.Time,
	size int, page func([]message) error) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	last := s.CachedInfo().State.LastSeq
	if last == 0 {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, HeadersOnly: true, InactiveThreshold: time.Minute}
	if !since.IsZero() {
		t := since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("create ordered consumer on %s: %w", stream, err)
	}
	buf := make([]message, 0, size)
	want := size
	for {
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(emptyWait))
		if err != nil {
			return fmt.Errorf("fetch from %s: %w", stream, err)
		}
		buf = buf[:0]
		done := false
		// A pull request waits until its batch is full or it expires: stop
		// at the message the server says is the last that matches, and ask
		// the next time for no more than remain.
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read message metadata: %w", err)
			}
			if meta.Sequence.Stream > last {
				done = true
				break
			}
			buf = append(buf, message{Seq: meta.Sequence.Stream, Subject: m.Subject(), Time: meta.Timestamp, Header: m.Headers()})
			want = int(min(uint64(size), max(meta.NumPending, 1)))
			if meta.NumPending == 0 || meta.Sequence.Stream == last {
				done = true
				break
			}
		}
		if !done {
			if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
				return fmt.Errorf("fetch from %s: %w", stream, err)
			}
		}
		if len(buf) > 0 {
			if err := page(buf); err != nil {
				return err
			}
		}
		if done || len(buf) == 0 {
			return ctx.Err()
		}
	}
}

// covers reports whether the subject pattern (tokens, * and >) matches the
// literal subject.
func covers(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}
