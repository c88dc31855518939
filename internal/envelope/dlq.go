package envelope

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// MaxErrorLen bounds the Bridge-Error header. Handler errors can embed whole
// responses; the DLQ entry needs the gist, and the header must stay far below
// max_payload.
const MaxErrorLen = 1024

// DLQPrefix is prepended to the original Nats-Msg-Id on the DLQ copy.
const DLQPrefix = "dlq-"

// The dead-letter headers of the Ruby jetstream_bridge gem, exactly as it
// writes them (lowercase). Services on the gem and on the bridge share DLQ
// subjects in a mixed fleet, so the bridge writes these beside its own and
// reads them when its own are absent.
const (
	GemHeaderDeadLetter = "x-dead-letter" // always "true"
	GemHeaderReason     = "x-dlq-reason"  // malformed_json, unrecoverable, max_deliver_exceeded
	GemHeaderDeliveries = "x-deliveries"  // decimal
	GemHeaderContext    = "x-dlq-context" // GemDLQContext as JSON
)

// The gem's x-dlq-reason values, each the counterpart of one of our classes.
const (
	GemReasonMalformed   = "malformed_json"       // ClassPoison
	GemReasonUnrecover   = "unrecoverable"        // ClassHandler
	GemReasonMaxDelivers = "max_deliver_exceeded" // ClassExhausted
)

// GemDLQContext is the gem's x-dlq-context header. The gem fills every
// field; the bridge leaves out what the header builder does not know
// (sequence, consumer, stream).
type GemDLQContext struct {
	EventID         string `json:"event_id"`
	Reason          string `json:"reason"`
	ErrorClass      string `json:"error_class"`
	ErrorMessage    string `json:"error_message"`
	Deliveries      int    `json:"deliveries"`
	OriginalSubject string `json:"original_subject"`
	Sequence        uint64 `json:"sequence,omitempty"`
	Consumer        string `json:"consumer,omitempty"`
	Stream          string `json:"stream,omitempty"`
	PublishedAt     string `json:"published_at"` // RFC 3339, seconds, UTC
}

// GemReason returns the gem's x-dlq-reason for one of our classes; a class
// the gem has no counterpart for (relay) is passed through.
func GemReason(class string) string {
	switch class {
	case ClassPoison:
		return GemReasonMalformed
	case ClassHandler:
		return GemReasonUnrecover
	case ClassExhausted:
		return GemReasonMaxDelivers
	}
	return class
}

// ClassOfGemReason is the inverse of GemReason: one of our classes for a
// gem reason, or the reason itself when it has no counterpart.
func ClassOfGemReason(reason string) string {
	switch reason {
	case GemReasonMalformed:
		return ClassPoison
	case GemReasonUnrecover:
		return ClassHandler
	case GemReasonMaxDelivers:
		return ClassExhausted
	}
	return reason
}

// DLQHeader returns the headers of a dead-letter copy: the original headers
// plus Bridge-Error-Class, Bridge-Error (reason, CR/LF turned into spaces,
// made valid UTF-8, cut to MaxErrorLen bytes), Bridge-Original-Subject,
// Bridge-Deliveries and Bridge-Failed-At (RFC 3339, UTC), and the same facts
// in the gem's format (x-dead-letter, x-dlq-reason, x-deliveries,
// x-dlq-context) so that the gem's side of a mixed fleet reads them too.
// Failure headers of an earlier round (a replayed message that failed
// again) are replaced. orig is not modified.
//
// Two deliberate departures from "keep the original headers":
//
//   - Nats-Msg-Id becomes "dlq-" + the original id. Kept unchanged, JetStream
//     would drop the DLQ copy as a duplicate of the original whenever both
//     subjects are in one stream (the default layout) and the failure comes
//     within the duplicate window. Prefixed, it is still deterministic, so a
//     sink that crashes after publishing the DLQ copy and before terminating
//     the original publishes a duplicate that JetStream does drop. A message
//     without an id gets none.
//   - Other Nats-* headers are dropped: they are publish-time directives
//     (Nats-Expected-Stream, Nats-Expected-Last-Sequence, Nats-Rollup,
//     Nats-TTL, ...) that would make the DLQ publish fail or purge the DLQ.
func DLQHeader(orig nats.Header, class, reason, originalSubject string, deliveries int, failedAt time.Time) nats.Header {
	h := make(nats.Header, len(orig)+9)
	for k, v := range orig {
		if hasPrefixFold(k, "Nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	if id := orig.Get(HeaderMsgID); id != "" {
		h.Set(HeaderMsgID, DLQPrefix+id)
	}
	reason = cleanReason(reason)
	h.Set(HeaderErrorClass, class)
	h.Set(HeaderError, reason)
	h.Set(HeaderOriginalSubject, originalSubject)
	h.Set(HeaderDeliveries, strconv.Itoa(deliveries))
	h.Set(HeaderFailedAt, failedAt.UTC().Format(time.RFC3339Nano))

	eventID := orig.Get(HeaderMsgID)
	if eventID == "" {
		eventID = orig.Get(gemMsgID)
	}
	ctx, _ := json.Marshal(GemDLQContext{ //nolint:errchkjson // strings and ints only
		EventID: eventID, Reason: GemReason(class), ErrorClass: class, ErrorMessage: reason,
		Deliveries: deliveries, OriginalSubject: originalSubject,
		PublishedAt: failedAt.UTC().Format(time.RFC3339),
	})
	h.Set(GemHeaderDeadLetter, "true")
	h.Set(GemHeaderReason, GemReason(class))
	h.Set(GemHeaderDeliveries, strconv.Itoa(deliveries))
	h.Set(GemHeaderContext, string(ctx))
	return h
}

// gemMsgID is the message id header as the gem spells it. JetStream does
// not deduplicate on it (it matches Nats-Msg-Id case-sensitively), but it is
// still the event's id.
const gemMsgID = "nats-msg-id"

// cleanReason makes an error message fit for one header line.
func cleanReason(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.ContainsAny(s, "\r\n") {
		s = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, s)
	}
	s = strings.TrimSpace(s)
	if len(s) <= MaxErrorLen {
		return s
	}
	const ellipsis = "…"
	cut := MaxErrorLen - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// HeaderSize is the size of h on the wire (the "NATS/1.0" status line, one
// "Key: value" line per value, the blank line), which counts against the
// server's max_payload together with the body.
func HeaderSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += headerLen(k, v)
		}
	}
	return n
}

// DLQStub is the body of a dead letter whose original body would not fit
// beside the failure headers within max_payload (or the stream's maximum
// message size): the event's identity, its size and why it failed, instead
// of the payload. Where the payload is kept depends on the side: the sink's
// inbox row, the relay's outbox row.
type DLQStub struct {
	EventID        string `json:"event_id"`
	EventType      string `json:"event_type,omitempty"`
	ResourceType   string `json:"resource_type,omitempty"`
	ResourceID     string `json:"resource_id,omitempty"`
	Producer       string `json:"producer,omitempty"`
	Subject        string `json:"subject"`         // where the original was published
	Size           int    `json:"size"`            // the original body, in bytes
	Reason         string `json:"reason"`          // why it was dead-lettered, as Bridge-Error
	PayloadOmitted bool   `json:"payload_omitted"` // always true: tells a stub from an envelope
}

// Body returns the stub as JSON. The reason is cleaned as Bridge-Error's.
func (s DLQStub) Body() []byte {
	s.Reason, s.PayloadOmitted = cleanReason(s.Reason), true
	b, _ := json.Marshal(s) //nolint:errchkjson // strings and ints only
	return b
}
