package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/jackc/pglogrepl"
	"github.com/nats-io/nats.go"
)

// ErrInvalid is wrapped by every error Parse returns: the body can never be
// processed, so the sink dead-letters it as poison instead of retrying.
var ErrInvalid = errors.New("invalid envelope")

// Envelope is a parsed message body.
type Envelope struct {
	EventID, EventType, Producer, ResourceType, ResourceID, OccurredAt, TraceID string
	SchemaVersion                                                               int
	Payload                                                                     json.RawMessage
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Parse parses and checks an envelope. It accepts what Build writes and what
// the Ruby gem writes: fields in any order, unknown fields ignored, a missing
// or null schema_version taken as 1, text fields given as numbers (the gem
// copies payload.id into resource_id as is) kept as their JSON text, null
// text fields taken as "". Keys are matched exactly (encoding/json would
// also match "Event_ID"); for a repeated key the last one wins.
//
// Required: a JSON object with a non-empty event_id and event_type and a
// payload that is an object or array. OccurredAt is returned as written.
// Payload is a copy; the Envelope does not alias body.
func Parse(body []byte) (*Envelope, error) { return parse(body, false) }

// ParseShared is Parse for a body that is never modified afterwards: the
// Envelope's Payload is a slice of body, and a large body's text fields are
// copied one by one rather than with the whole body, so that a parsed
// envelope costs little more memory than the body it came from.
func ParseShared(body []byte) (*Envelope, error) { return parse(body, true) }

// sharedCopyAbove is the body size from which ParseShared copies text
// fields one by one: below it one copy of the body is cheaper.
const sharedCopyAbove = 4096

func parse(body []byte, shared bool) (*Envelope, error) {
	b := skipSpaceEnd(body)
	i := skipSpace(b, 0)
	if i == len(b) {
		return nil, invalid("empty body")
	}
	if b[i] != '{' {
		if scanValue(b, i, 0) == len(b) {
			return nil, invalid("body is JSON but not an object")
		}
		return nil, invalid("body is not valid JSON")
	}

	var f [numFields][]byte
	it := objectIter{data: b, pos: i + 1, depth: 1}
	for {
		k, v, more, ok := it.next()
		if !ok {
			return nil, invalid("body is not valid JSON")
		}
		if !more {
			break
		}
		if idx := fieldIndex(k); idx >= 0 {
			f[idx] = v
		}
	}
	if it.pos != len(b) {
		return nil, invalid("body is not valid JSON")
	}

	if p := f[fPayload]; p == nil {
		return nil, invalid("missing payload")
	} else if p[0] != '{' && p[0] != '[' {
		return nil, invalid("payload must be a JSON object or array")
	}

	var s string
	perField := shared && len(b) > sharedCopyAbove
	if !perField {
		s = string(b)
	}
	env := &Envelope{SchemaVersion: 1}
	targets := [...]*string{
		fEventID:      &env.EventID,
		fEventType:    &env.EventType,
		fProducer:     &env.Producer,
		fResourceType: &env.ResourceType,
		fResourceID:   &env.ResourceID,
		fOccurredAt:   &env.OccurredAt,
		fTraceID:      &env.TraceID,
	}
	for idx, dst := range targets {
		v := f[idx]
		if v == nil {
			continue
		}
		var (
			text string
			ok   bool
		)
		if perField {
			text, ok = textIn(string(v), v, v)
		} else {
			text, ok = textIn(s, b, v)
		}
		if !ok {
			return nil, invalid("%s must be a string", fieldNames[idx])
		}
		*dst = text
	}
	if env.EventID == "" {
		return nil, invalid("missing event_id")
	}
	if env.EventType == "" {
		return nil, invalid("missing event_type")
	}
	if v := f[fSchemaVersion]; v != nil && v[0] != 'n' {
		n, ok := parseVersion(v)
		if !ok {
			return nil, invalid("schema_version must be an integer")
		}
		env.SchemaVersion = n
	}
	if shared {
		env.Payload = f[fPayload]
	} else {
		env.Payload = append(json.RawMessage(nil), f[fPayload]...)
	}
	return env, nil
}

const (
	fEventID = iota
	fEventType
	fProducer
	fResourceType
	fResourceID
	fOccurredAt
	fTraceID
	fSchemaVersion
	fPayload
	numFields
)

var fieldNames = [numFields]string{
	fEventID:       "event_id",
	fEventType:     "event_type",
	fProducer:      "producer",
	fResourceType:  "resource_type",
	fResourceID:    "resource_id",
	fOccurredAt:    "occurred_at",
	fTraceID:       "trace_id",
	fSchemaVersion: "schema_version",
	fPayload:       "payload",
}

// fieldIndex maps a raw key to its field, or -1.
func fieldIndex(k []byte) int {
	name := k[1 : len(k)-1]
	for _, c := range name {
		if c == '\\' {
			return fieldIndexString(unquote(k))
		}
	}
	return fieldIndexString(string(name))
}

func fieldIndexString(name string) int {
	switch name {
	case "event_id":
		return fEventID
	case "event_type":
		return fEventType
	case "producer":
		return fProducer
	case "resource_type":
		return fResourceType
	case "resource_id":
		return fResourceID
	case "occurred_at":
		return fOccurredAt
	case "trace_id":
		return fTraceID
	case "schema_version":
		return fSchemaVersion
	case "payload":
		return fPayload
	}
	return -1
}

// textIn returns a text field: a string decoded, a number as written, null
// as "". s is a string copy of raw, of which v is a subslice.
func textIn(s string, raw, v []byte) (string, bool) {
	switch c := v[0]; {
	case c == '"':
		return stringIn(s, raw, v), true
	case c == 'n':
		return "", true
	case c == '-' || (c >= '0' && c <= '9'):
		off := offsetIn(raw, v)
		return s[off : off+len(v)], true
	}
	return "", false
}

func parseVersion(v []byte) (int, bool) {
	c := v[0]
	if c != '-' && (c < '0' || c > '9') {
		return 0, false
	}
	if n, err := strconv.Atoi(string(v)); err == nil {
		return n, true
	}
	// 1.0 or 1e0: still the integer 1.
	x, err := strconv.ParseFloat(string(v), 64)
	if err != nil || x != math.Trunc(x) || math.Abs(x) > 1<<31 {
		return 0, false
	}
	return int(x), true
}

// ParsePosition reads an event's source position from Bridge-Commit-LSN and
// Bridge-Tx-Index. ok is false when either is absent or malformed, as on
// messages from the Ruby gem, which has no such thing.
func ParsePosition(h nats.Header) (Position, bool) {
	lsn := h.Get(HeaderCommitLSN)
	idx := h.Get(HeaderTxIndex)
	commit, ok := parseLSN(lsn)
	if !ok || idx == "" || len(idx) > 9 {
		return Position{}, false
	}
	n, ok := digits(idx)
	if !ok {
		return Position{}, false
	}
	return Position{CommitLSN: pglogrepl.LSN(commit), TxIndex: n}, true
}

// Compare orders positions as the WAL does: by commit LSN, then by index in
// the transaction. It returns -1, 0 or +1.
func (p Position) Compare(q Position) int {
	switch {
	case p.CommitLSN < q.CommitLSN:
		return -1
	case p.CommitLSN > q.CommitLSN:
		return 1
	case p.TxIndex < q.TxIndex:
		return -1
	case p.TxIndex > q.TxIndex:
		return 1
	}
	return 0
}

// String formats a position as "LSN#index", for logs.
func (p Position) String() string { return FormatLSN(p.CommitLSN) + "#" + strconv.Itoa(p.TxIndex) }
