package envelope

import (
	"errors"
	"fmt"
)

// DecodeRowJSON fills row from an outbox event written as one JSON object
// with the outbox table's column names as keys (event_id, resource_type,
// resource_id, event_type, payload, headers, subject, destination, trace_id,
// occurred_at): the content of the logical decoding message that
// jetstream_publish emits instead of inserting a row.
//
// The result is the Row the table path decodes for the same values, so Build
// gives byte-identical messages either way: text fields are the strings
// (null and absent give ""), payload and headers are their raw JSON text
// (null gives nil; an empty headers object gives nil, as the table path
// treats "{}"), and occurred_at is whatever timestamp text the writer put
// there (jsonb renders timestamptz as RFC 3339 with an offset, which Build
// converts to UTC like the table's text form). Unknown keys are ignored so a
// newer writer does not break an older relay.
//
// The whole object is validated here, payload included and with Build's
// nesting limit, so Row.PayloadJSONB is set: Build need not scan the payload
// again. An error means the content can never become an event; the caller
// dead-letters it. Values are copied: content may be reused afterwards.
func DecodeRowJSON(content []byte, row *Row) error {
	*row = Row{}
	i := skipSpace(content, 0)
	if i >= len(content) || content[i] != '{' {
		return errors.New("content is not a JSON object")
	}
	// The content object stands where the envelope does (depth 0): the
	// payload then sits at depth 1, as in scanPayload.
	it := objectIter{data: content, pos: i + 1, depth: 1}
	for {
		k, v, more, ok := it.next()
		if !ok {
			return errors.New("content is not valid JSON")
		}
		if !more {
			break
		}
		var dst *string
		switch {
		case keyIs(k, "event_id"):
			dst = &row.EventID
		case keyIs(k, "resource_type"):
			dst = &row.ResourceType
		case keyIs(k, "resource_id"):
			dst = &row.ResourceID
		case keyIs(k, "event_type"):
			dst = &row.EventType
		case keyIs(k, "subject"):
			dst = &row.Subject
		case keyIs(k, "destination"):
			dst = &row.Destination
		case keyIs(k, "trace_id"):
			dst = &row.TraceID
		case keyIs(k, "occurred_at"):
			dst = &row.OccurredAt
		case keyIs(k, "payload"):
			if string(v) != "null" {
				row.Payload = append([]byte(nil), v...)
				row.PayloadJSONB = true
			} else {
				row.Payload, row.PayloadJSONB = nil, false
			}
		case keyIs(k, "headers"):
			row.Headers = nil
			if string(v) != "null" && !isEmptyObject(v) {
				row.Headers = append([]byte(nil), v...)
			}
		}
		if dst != nil {
			s, ok := jsonText(v)
			if !ok {
				return fmt.Errorf("%s must be a string or null", unquote(k))
			}
			*dst = s
		}
	}
	if skipSpace(content, it.pos) != len(content) {
		return errors.New("content has data after its JSON object")
	}
	return nil
}

// jsonText decodes a raw JSON string (or null, as "").
func jsonText(v []byte) (string, bool) {
	if string(v) == "null" {
		return "", true
	}
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if _, slow := scanString(v, 0); slow { // escapes or invalid UTF-8
		return unquote(v), true
	}
	return string(v[1 : len(v)-1]), true
}

func isEmptyObject(v []byte) bool {
	if len(v) < 2 || v[0] != '{' {
		return false
	}
	return skipSpace(v, 1) == len(v)-1
}
