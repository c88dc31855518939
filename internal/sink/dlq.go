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

func newDeadLetter(m *jetstream.RawStreamMsg) *DeadLetter {
	h := m.Header
	dl := &DeadLetter{
		Sequence: m.Sequence, Stored: m.Time,
		Class: h.Get(envelope.HeaderErrorClass), Error: h.Get(envelope.HeaderError),
		OriginalSubject: h.Get(envelope.HeaderOriginalSubject), FailedAt: h.Get(envelope.HeaderFailedAt),
		Header: h, Data: m.Data,
	}
	dl.Deliveries, _ = strconv.Atoi(h.Get(envelope.HeaderDeliveries))
	var gem *envelope.GemDLQContext
	if dl.Class == "" && dl.OriginalSubject == "" {
		gem = fromGemHeaders(dl, h)
	}
	var stub envelope.DLQStub
	if env, err := envelope.Parse(m.Data); err == nil {
		dl.EventID, dl.EventType = env.EventID, env.EventType
	} else if json.Unmarshal(m.Data, &stub) == nil && stub.PayloadOmitted && stub.EventID != "" {
		dl.EventID, dl.EventType = stub.EventID, stub.EventType
	} else if gem != nil && gem.EventID != "" {
		dl.EventID = gem.EventID
	} else {
		dl.EventID = strings.TrimPrefix(h.Get(envelope.HeaderMsgID), envelope.DLQPrefix)
	}
	return dl
}

// fromGemHeaders fills dl from the Ruby gem's dead-letter headers, for a
// dead letter without Bridge-* headers: the class from x-dlq-reason (mapped
// onto ours, so --class selects both formats alike), the error as "<error
// class>: <message>", the original subject and failure time from
// x-dlq-context, the deliveries from x-deliveries. It returns the context,
// nil when there is none or it is not JSON.
func fromGemHeaders(dl *DeadLetter, h nats.Header) *envelope.GemDLQContext {
	reason := h.Get(envelope.GemHeaderReason)
	if reason != "" {
		dl.Class = envelope.ClassOfGemReason(reason)
	}
	dl.Deliveries, _ = strconv.Atoi(h.Get(envelope.GemHeaderDeliveries))
	raw := h.Get(envelope.GemHeaderContext)
	if raw == "" {
		return nil
	}
	var ctx envelope.GemDLQContext
	if json.Unmarshal([]byte(raw), &ctx) != nil {
		return nil
	}
	if dl.Class == "" {
		dl.Class = envelope.ClassOfGemReason(ctx.Reason)
	}
	switch {
	case ctx.ErrorClass != "" && ctx.ErrorMessage != "":
		dl.Error = ctx.ErrorClass + ": " + ctx.ErrorMessage
	default:
		dl.Error = ctx.ErrorClass + ctx.ErrorMessage
	}
	dl.OriginalSubject, dl.FailedAt = ctx.OriginalSubject, ctx.PublishedAt
	if dl.Deliveries == 0 {
		dl.Deliveries = ctx.Deliveries
	}
	return &ctx
}

// ListDLQ calls fn for every message on subject in stream, oldest first.
// It reads message by message (get by sequence, the next one on subject),
// with no consumer: a consumer is refused on a work-queue stream (a pull
// consumer without explicit ack, or a second one on a filter another
// durable has, as the Ruby gem's streams are), and reading this way leaves
// the DLQ as it is on any stream. The stream's direct get is used when it
// allows it, the stream leader's message get otherwise.
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
	for seq := uint64(1); seq <= last.Sequence; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil // the rest were removed while we read
		}
		if err != nil {
			return fmt.Errorf("read dead letter after seq %d: %w", seq-1, err)
		}
		if m.Sequence > last.Sequence {
			return nil
		}
		if err := fn(newDeadLetter(m)); err != nil {
			return err
		}
		seq = m.Sequence + 1
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// RemovesReplayed reports whether a replayed dead letter must be deleted
// from the stream by its sequence: on a work-queue stream nothing else ever
// removes it (no consumer reads the DLQ subject), and left there it would
// be replayed again by the next replay. On other streams the DLQ is history
// and stays as it is.
func RemovesReplayed(ctx context.Context, js jetstream.JetStream, stream string) (bool, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return false, fmt.Errorf("look up stream %s: %w", stream, err)
	}
	return st.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy, nil
}

// RemoveDeadLetter deletes the dead letter at seq from stream (see
// RemovesReplayed).
func RemoveDeadLetter(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete message %d: %w", seq, err)
	}
	return nil
}

// ReplayMessage returns the message that replays a dead letter: its body and
// original headers, without the failure headers (Bridge-* and the gem's
// x-dead-letter, x-dlq-*, x-deliveries), to Bridge-Original-Subject (or the
// gem's x-dlq-context original_subject), with Nats-Msg-Id "replay-<event id>-<dlq seq>"
// (replaying the same dead letter twice within the duplicate window stores
// it once). The inbox applies a replayed event even when its row is dead.
func ReplayMessage(dl *DeadLetter) (*nats.Msg, error) {
	if isStub(dl.Data) {
		return nil, fmt.Errorf("dead letter %d (event %s): %w", dl.Sequence, dl.EventID, ErrStubDeadLetter)
	}
	subj := dl.OriginalSubject
	if err := envelope.ValidatePublishSubject(subj); err != nil {
		return nil, fmt.Errorf("dead letter %d: %w (%s or %s original_subject): %w",
			dl.Sequence, ErrNoOriginalSubject, envelope.HeaderOriginalSubject, envelope.GemHeaderContext, err)
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

// ErrNoOriginalSubject marks a dead letter that names no subject to replay
// it to: neither format's failure headers are there, or the subject is not
// one a message can be published to.
var ErrNoOriginalSubject = errors.New("no original subject to replay it to")

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
		envelope.HeaderDeliveries, envelope.HeaderFailedAt, envelope.GemHeaderDeadLetter, envelope.GemHeaderReason,
		envelope.GemHeaderDeliveries, envelope.GemHeaderContext} {
		if strings.EqualFold(k, f) {
			return true
		}
	}
	return false
}
