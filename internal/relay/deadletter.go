package relay

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
)

// owner is what every message of the relay is published for: an event of
// the stream (outgoing) or a row of the table (backfilled). A dead letter
// is built from its row.
type owner interface {
	publish.Owner
	row() *envelope.Row
}

func (o *outgoing) row() *envelope.Row { return &o.ev.Row }

// rowDeadLetter builds the DLQ message for an event whose row cannot be
// published as asked, with the event's position; nil when USE_DLQ=false.
func (r *Relay) rowDeadLetter(ev *cdc.Event) *publish.Message {
	m := r.rowDeadLetterFor(&ev.Row, ev.Err)
	if m == nil {
		return nil
	}
	m.Header.Set(envelope.HeaderCommitLSN, envelope.FormatLSN(ev.CommitLSN))
	m.Header.Set(envelope.HeaderTxIndex, strconv.Itoa(ev.Index))
	if m.MsgID == "" {
		m.MsgID = envelope.DLQPrefix + "relay-" + envelope.FormatLSN(ev.CommitLSN) + "-" + strconv.Itoa(ev.Index)
		m.Header.Set(envelope.HeaderMsgID, m.MsgID)
	}
	return m
}

// rowDeadLetterFor builds the dead letter of a row. Its body is the raw row,
// so nothing of it is lost. It returns nil when USE_DLQ=false (logged).
func (r *Relay) rowDeadLetterFor(row *envelope.Row, cause error) *publish.Message {
	intended := row.Subject
	if intended == "" {
		intended = r.builder.Subjects.Publish(row.Destination)
	}
	if !r.opts.UseDLQ {
		r.log.Error().Err(cause).Str("event_id", row.EventID).Str("subject", intended).
			Msg("row cannot be published and USE_DLQ=false: skipped (the row stays in the outbox table)")
		r.obs.DeadLettered()
		return nil
	}
	r.log.Warn().Err(cause).Str("event_id", row.EventID).Str("subject", intended).Msg("dead-lettering outbox row")
	body, _ := json.Marshal(rawRow{
		EventID: row.EventID, ResourceType: row.ResourceType, ResourceID: row.ResourceID, EventType: row.EventType,
		Payload: jsonOrString(row.Payload), Headers: jsonOrString(row.Headers), Subject: row.Subject,
		Destination: row.Destination, TraceID: row.TraceID, OccurredAt: row.OccurredAt, Producer: r.opts.Producer,
	})
	orig := nats.Header{envelope.HeaderContentType: []string{envelope.ContentTypeJSON}}
	if row.EventID != "" {
		orig.Set(envelope.HeaderMsgID, row.EventID)
	}
	h := envelope.DLQHeader(orig, envelope.ClassRelay, cause.Error(), intended, 0, time.Now())
	return &publish.Message{Subject: r.builder.Subjects.DLQ(), Body: body, Header: h, MsgID: h.Get(envelope.HeaderMsgID)}
}

type rawRow struct {
	EventID      string          `json:"event_id"`
	ResourceType string          `json:"resource_type"`
	ResourceID   string          `json:"resource_id"`
	EventType    string          `json:"event_type"`
	Payload      json.RawMessage `json:"payload"`
	Headers      json.RawMessage `json:"headers"`
	Subject      string          `json:"subject"`
	Destination  string          `json:"destination"`
	TraceID      string          `json:"trace_id"`
	OccurredAt   string          `json:"occurred_at"`
	Producer     string          `json:"producer"`
}

func jsonOrString(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// rejected builds the dead letter for a message JetStream refuses for good.
func (r *Relay) rejected(m *publish.Message, cause error) (*publish.Message, error) {
	row := m.Owner.(owner).row()
	if !r.opts.UseDLQ {
		r.log.Error().Err(cause).Str("event_id", row.EventID).Str("subject", m.Subject).
			Msg("JetStream refused the event and USE_DLQ=false: skipped (the row stays in the outbox table)")
		r.obs.DeadLettered()
		return nil, nil // the owner is settled without an ack
	}
	r.log.Warn().Err(cause).Str("event_id", row.EventID).Str("subject", m.Subject).Msg("JetStream refused the event, dead-lettering it")
	body := m.Body
	var apiErr *jetstream.APIError
	if errors.Is(cause, nats.ErrMaxPayload) || (errors.As(cause, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum) {
		// The copy would be refused too: keep the identity, the row keeps the payload.
		body, _ = json.Marshal(map[string]any{"event_id": row.EventID, "event_type": row.EventType,
			"resource_type": row.ResourceType, "resource_id": row.ResourceID, "producer": r.opts.Producer,
			"payload_omitted": true, "size": len(m.Body)})
	}
	h := envelope.DLQHeader(m.Header, envelope.ClassRelay, cause.Error(), m.Subject, 0, time.Now())
	return &publish.Message{Subject: r.builder.Subjects.DLQ(), Body: body, Header: h, MsgID: h.Get(envelope.HeaderMsgID)}, nil
}
