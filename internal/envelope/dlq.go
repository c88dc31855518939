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

// DLQHeader returns the headers of a dead-letter copy: the original headers
// plus Bridge-Error-Class, Bridge-Error (reason, CR/LF turned into spaces,
// made valid UTF-8, cut to MaxErrorLen bytes), Bridge-Original-Subject,
// Bridge-Deliveries and Bridge-Failed-At (RFC 3339, UTC). Failure headers of
// an earlier round (a replayed message that failed again) are replaced.
// orig is not modified.
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
	h := make(nats.Header, len(orig)+5)
	for k, v := range orig {
		if hasPrefixFold(k, "Nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	if id := orig.Get(HeaderMsgID); id != "" {
		h.Set(HeaderMsgID, DLQPrefix+id)
	}
	h.Set(HeaderErrorClass, class)
	h.Set(HeaderError, cleanReason(reason))
	h.Set(HeaderOriginalSubject, originalSubject)
	h.Set(HeaderDeliveries, strconv.Itoa(deliveries))
	h.Set(HeaderFailedAt, failedAt.UTC().Format(time.RFC3339Nano))
	return h
}

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
