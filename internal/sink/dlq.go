package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// deadLetter publishes the dead-letter copy of it and waits for JetStream to
// store it, marks the inbox row dead, then terminates the message. When the
// copy cannot be stored the message is handed back (NakWithDelay) to be
// dead-lettered on a later delivery: it is never terminated without a copy.
// With USE_DLQ=false the failure is logged at error level instead of copied.
// It returns the hand-back delay, 0 when terminated.
func (s *Sink) deadLetter(ctx context.Context, d *dispatcher, it *item, class, reason string, attempts int) time.Duration {
	// Bookkeeping after the decision must not be cut short by shutdown.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if s.useDLQ {
		if err := s.publishDLQ(bctx, it, class, reason, attempts); err != nil {
			delay := s.backoff[len(s.backoff)-1]
			s.event(s.log.Error(), it).Err(err).Str("class", class).Dur("retry_in", delay).
				Msg("cannot publish dead letter; handing the message back to try again")
			d.finish(it)
			if err := it.msg.NakWithDelay(delay); err != nil {
				s.event(s.log.Warn(), it).Err(err).Msg("cannot hand message back; it is redelivered after the ack wait")
			}
			return delay
		}
	} else {
		s.event(s.log.Error(), it).Str("class", class).Str("reason", reason).Int("attempts", attempts).
			Msg("event failed and USE_DLQ=false: marked dead and terminated without a dead letter")
	}
	if err := s.recordDead(bctx, it, attempts, reason); err != nil {
		s.event(s.log.Warn(), it).Err(err).Msg("dead letter stored but the inbox row could not be marked dead")
	}
	d.finish(it)
	if err := it.msg.Term(); err != nil {
		s.event(s.log.Warn(), it).Err(err).Msg("cannot terminate message; its redelivery will be terminated again")
	}
	s.obs.Result(ResultDead)
	if s.useDLQ {
		s.event(s.log.Warn(), it).Str("class", class).Str("reason", reason).Int("attempts", attempts).
			Str("dlq_subject", s.dlqSubject).Msg("dead-lettered")
	}
	return 0
}

// publishDLQ stores the original body and headers plus the failure headers
// (envelope.DLQHeader) on the DLQ subject.
func (s *Sink) publishDLQ(ctx context.Context, it *item, class, reason string, attempts int) error {
	h := envelope.DLQHeader(it.msg.Headers(), class, reason, it.msg.Subject(), attempts, time.Now())
	if h.Get(envelope.HeaderMsgID) == "" {
		// Still deterministic, so a copy published twice (crash before Term)
		// is deduplicated.
		h.Set(envelope.HeaderMsgID, envelope.DLQPrefix+it.stream+"-"+strconv.FormatUint(it.seq, 10))
	}
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.dlqSubject, Header: h, Data: it.msg.Data()}); err != nil {
		return fmt.Errorf("publish dead letter to %s: %w", s.dlqSubject, err)
	}
	return nil
}

// DeadLetter is one message on a DLQ subject.
type DeadLetter struct {
	Sequence        uint64      `json:"seq"` // in the stream
	Stored          time.Time   `json:"stored"`
	EventID         string      `json:"event_id"`
	EventType       string      `json:"event_type,omitempty"`
	Class           string      `json:"class"`
	Error           string      `json:"error"`
	OriginalSubject string      `json:"original_subject"`
	Deliveries      int         `json:"deliveries"`
	FailedAt        string      `json:"failed_at"`
	Header          nats.Header `json:"headers"`
	Data            []byte      `json:"-"`
}

func newDeadLetter(m jetstream.Msg) *DeadLetter {
	h := m.Headers()
	dl := &DeadLetter{
		Class: h.Get(envelope.HeaderErrorClass), Error: h.Get(envelope.HeaderError),
		OriginalSubject: h.Get(envelope.HeaderOriginalSubject), FailedAt: h.Get(envelope.HeaderFailedAt),
		Header: h, Data: m.Data(),
	}
	dl.Deliveries, _ = strconv.Atoi(h.Get(envelope.HeaderDeliveries))
	if meta, err := m.Metadata(); err == nil {
		dl.Sequence, dl.Stored = meta.Sequence.Stream, meta.Timestamp
	}
	if env, err := envelope.Parse(m.Data()); err == nil {
		dl.EventID, dl.EventType = env.EventID, env.EventType
	} else {
		dl.EventID = strings.TrimPrefix(h.Get(envelope.HeaderMsgID), envelope.DLQPrefix)
	}
	return dl
}

// ListDLQ calls fn for every message on subject in stream, oldest first. It
// reads with an ephemeral ordered consumer and acknowledges nothing: the DLQ
// is left as it is.
func ListDLQ(ctx context.Context, js jetstream.JetStream, stream, subject string, fn func(*DeadLetter) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	last, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read last dead letter: %w", err)
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return fmt.Errorf("read dead letters: %w", err)
	}
	for {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return fmt.Errorf("read dead letters: %w", err)
		}
		dl := newDeadLetter(m)
		if err := fn(dl); err != nil {
			return err
		}
		if dl.Sequence >= last.Sequence {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// ReplayMessage returns the message that replays a dead letter: its body and
// original headers, without the Bridge-* failure headers, to
// Bridge-Original-Subject, with Nats-Msg-Id "replay-<event id>-<dlq seq>"
// (replaying the same dead letter twice within the duplicate window stores
// it once). The inbox applies a replayed event even when its row is dead.
func ReplayMessage(dl *DeadLetter) (*nats.Msg, error) {
	subj := dl.OriginalSubject
	if err := envelope.ValidatePublishSubject(subj); err != nil {
		return nil, fmt.Errorf("dead letter %d has no usable %s: %w", dl.Sequence, envelope.HeaderOriginalSubject, err)
	}
	h := make(nats.Header, len(dl.Header))
	for k, v := range dl.Header {
		if isFailureHeader(k) || (len(k) >= 5 && strings.EqualFold(k[:5], "Nats-")) {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	id := dl.EventID
	if id == "" {
		id = "seq" + strconv.FormatUint(dl.Sequence, 10)
	}
	h.Set(envelope.HeaderMsgID, "replay-"+id+"-"+strconv.FormatUint(dl.Sequence, 10))
	return &nats.Msg{Subject: subj, Header: h, Data: dl.Data}, nil
}

// isFailureHeader reports the headers a dead letter adds (names compared
// case-insensitively, as the DLQ header builder does).
func isFailureHeader(k string) bool {
	for _, f := range [...]string{envelope.HeaderError, envelope.HeaderErrorClass, envelope.HeaderOriginalSubject,
		envelope.HeaderDeliveries, envelope.HeaderFailedAt} {
		if strings.EqualFold(k, f) {
			return true
		}
	}
	return false
}
