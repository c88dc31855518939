package sink

import (
	"bytes"
	"context"
	"encoding/json"
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
// copy cannot be stored it returns the error and leaves the message held,
// unsettled: the caller keeps it, and its lane, until a later try stores
// the copy, so that no later event of its key overtakes it; it is never
// terminated without a copy. With USE_DLQ=false the failure is logged at
// error level instead of copied.
func (s *Sink) deadLetter(ctx context.Context, d *dispatcher, it *item, class, reason string, attempts int) error {
	// Bookkeeping after the decision must not be cut short by shutdown.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	rowReason := reason
	if s.useDLQ {
		stub, err := s.publishDLQ(bctx, it, class, reason, attempts)
		if err != nil {
			return err
		}
		if stub != "" {
			// Kept within the row's bound whatever the reason's length.
			rowReason = truncate(reason, envelope.MaxErrorLen-len(stub)-3) + " (" + stub + ")"
		}
	} else {
		s.event(s.log.Error(), it).Str("class", class).Str("reason", reason).Int("attempts", attempts).
			Msg("event failed and USE_DLQ=false: marked dead and terminated without a dead letter")
	}
	if err := s.recordDead(bctx, it, attempts, rowReason); err != nil {
		s.event(s.log.Warn(), it).Err(err).Msg("dead letter stored but the inbox row could not be marked dead")
	}
	d.finish(it)
	if err := it.msg.Term(); err != nil {
		s.event(s.log.Warn(), it).Err(err).Msg("cannot terminate message; its redelivery will be terminated again")
	}
	s.obs.Result(ResultDead)
	if s.useDLQ {
		s.event(s.log.Warn(), it).Str("class", class).Str("reason", rowReason).Int("attempts", attempts).
			Str("dlq_subject", s.dlqSubject).Msg("dead-lettered")
	}
	return nil
}

// publishDLQ stores the original body and headers plus the failure headers
// (envelope.DLQHeader) on the DLQ subject. A copy that would not fit within
// the connection's max_payload, or that the stream refuses for its size,
// carries a stub body instead (envelope.DLQStub: the event's identity, size
// and reason; the inbox row keeps the payload): a message close to the limit
// would otherwise never fit beside the failure headers and could never be
// dead-lettered. stub says why the body was left out, "" when it was not.
func (s *Sink) publishDLQ(ctx context.Context, it *item, class, reason string, attempts int) (stub string, err error) {
	h := envelope.DLQHeader(it.msg.Headers(), class, reason, it.msg.Subject(), attempts, time.Now())
	if h.Get(envelope.HeaderMsgID) == "" {
		// Still deterministic, so a copy published twice (crash before Term)
		// is deduplicated.
		h.Set(envelope.HeaderMsgID, envelope.DLQPrefix+it.stream+"-"+strconv.FormatUint(it.seq, 10))
	}
	m := &nats.Msg{Subject: s.dlqSubject, Header: h, Data: it.msg.Data()}
	limit := int(s.js.Conn().MaxPayload())
	if size := envelope.HeaderSize(h) + len(m.Data); limit > 0 && size > limit {
		stub = fmt.Sprintf("dead letter of %d bytes over max_payload %d: body left out", size, limit)
		s.stubDLQ(m, it, class, reason, attempts, limit)
	}
	_, err = s.js.PublishMsg(ctx, m)
	if stub == "" && tooLarge(err) {
		stub = fmt.Sprintf("dead letter refused for its size (%v): body left out", err)
		s.stubDLQ(m, it, class, reason, attempts, limit)
		_, err = s.js.PublishMsg(ctx, m)
	}
	if err != nil {
		return "", fmt.Errorf("publish dead letter to %s: %w", s.dlqSubject, err)
	}
	return stub, nil
}

// stubDLQ replaces m's body by a stub. When even the stub does not fit
// beside the original headers (they are what is large), the original
// headers are left out too; the failure headers and the message id stay.
func (s *Sink) stubDLQ(m *nats.Msg, it *item, class, reason string, attempts, limit int) {
	st := envelope.DLQStub{EventID: it.eventID(), Subject: it.msg.Subject(), Size: len(it.msg.Data()), Reason: reason}
	if env := it.env; env != nil {
		st.EventType, st.ResourceType, st.ResourceID, st.Producer = env.EventType, env.ResourceType, env.ResourceID, env.Producer
	}
	m.Data = st.Body()
	if limit > 0 && envelope.HeaderSize(m.Header)+len(m.Data) > limit {
		id := m.Header.Get(envelope.HeaderMsgID)
		m.Header = envelope.DLQHeader(nil, class, reason, it.msg.Subject(), attempts, time.Now())
		m.Header.Set(envelope.HeaderMsgID, id)
	}
}

// tooLarge reports a publish refused for its size: by the client against
// the server's max_payload, or by the stream's maximum message size.
func tooLarge(err error) bool {
	var apiErr *jetstream.APIError
	return err != nil && (errors.Is(err, nats.ErrMaxPayload) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum))
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
	var stub envelope.DLQStub
	if env, err := envelope.Parse(m.Data()); err == nil {
		dl.EventID, dl.EventType = env.EventID, env.EventType
	} else if json.Unmarshal(m.Data(), &stub) == nil && stub.PayloadOmitted && stub.EventID != "" {
		dl.EventID, dl.EventType = stub.EventID, stub.EventType
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
	if isStub(dl.Data) {
		return nil, fmt.Errorf("dead letter %d (event %s): %w", dl.Sequence, dl.EventID, ErrStubDeadLetter)
	}
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

// ErrStubDeadLetter marks a dead letter whose body is a stub that stands in
// for a message too large to be dead-lettered whole: replaying it would
// publish the stub as if it were the event.
var ErrStubDeadLetter = errors.New("its body is a stub (payload_omitted): the original was too large to dead-letter; republish the event from its producer or from the inbox row's payload")

// isStub reports whether body is a dead-letter stub (the sink's or the
// relay's), which carries "payload_omitted": true at its top level.
func isStub(body []byte) bool {
	if !bytes.Contains(body, []byte(`"payload_omitted"`)) {
		return false
	}
	var v struct {
		PayloadOmitted bool `json:"payload_omitted"`
	}
	return json.Unmarshal(body, &v) == nil && v.PayloadOmitted
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
