package testutil

import (
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// GemEnvelope is an event body as the Ruby jetstream_bridge gem publishes
// it (its publisher's envelope: the same keys in the same order, a
// seconds-precision occurred_at and a 16-hex-digit trace id).
func GemEnvelope(eventID, producer, resourceType, resourceID string) []byte {
	return fmt.Appendf(nil, `{"event_id":%q,"schema_version":1,"event_type":"%s.updated","producer":%q,`+
		`"resource_id":%q,"occurred_at":"2026-01-02T03:04:05Z","trace_id":"0123456789abcdef",`+
		`"resource_type":%q,"payload":{"id":%q,"n":1}}`,
		eventID, resourceType, producer, resourceID, resourceType, resourceID)
}

// GemDeadLetter is a dead letter exactly as the gem's consumer publishes it
// on its DLQ subject (<app>.sync.dlq): the original body, the original
// headers (the gem's own message id is the lowercase nats-msg-id, which it
// copies unchanged), then x-dead-letter, x-dlq-reason, x-deliveries and the
// x-dlq-context JSON it builds from the failed delivery. reason is one of
// malformed_json, unrecoverable, max_deliver_exceeded.
func GemDeadLetter(dlqSubject, originalSubject, eventID string, body []byte, reason, errorClass, errorMessage string,
	deliveries int, streamSeq uint64,
) *nats.Msg {
	ctx := fmt.Sprintf(`{"event_id":%q,"reason":%q,"error_class":%q,"error_message":%q,"deliveries":%d,`+
		`"original_subject":%q,"sequence":%d,"consumer":"orders-workers","stream":"jetstream-bridge-stream",`+
		`"published_at":"2026-01-02T03:05:00Z"}`,
		eventID, reason, errorClass, errorMessage, deliveries, originalSubject, streamSeq)
	h := nats.Header{}
	h["nats-msg-id"] = []string{eventID}
	h["x-dead-letter"] = []string{"true"}
	h["x-dlq-reason"] = []string{reason}
	h["x-deliveries"] = []string{strconv.Itoa(deliveries)}
	h["x-dlq-context"] = []string{ctx}
	return &nats.Msg{Subject: dlqSubject, Header: h, Data: body}
}
