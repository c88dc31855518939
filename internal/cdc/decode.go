package cdc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// ErrProtocol marks a replication message that cannot be decoded. It means the
// stream is corrupt or speaks another protocol; it is never a bad row.
var ErrProtocol = errors.New("pgoutput protocol error")

// column positions of the outbox fields in one relation; -1 when absent.
type outboxColumns struct {
	eventID, resourceType, resourceID, eventType, payload, headers,
	subject, destination, traceID, occurredAt int
}

// relation is what a Relation message told us about one table.
type relation struct {
	namespace, name string
	outbox          bool
	cols            outboxColumns
	ncols           int
	payloadJSONB    bool // the payload column is jsonb: Postgres validated its values
}

func newRelation(m *pglogrepl.RelationMessage, schema, table string) *relation {
	r := &relation{namespace: m.Namespace, name: m.RelationName, ncols: len(m.Columns)}
	r.outbox = m.Namespace == schema && m.RelationName == table
	c := outboxColumns{-1, -1, -1, -1, -1, -1, -1, -1, -1, -1}
	for i, col := range m.Columns {
		switch col.Name {
		case "event_id":
			c.eventID = i
		case "resource_type":
			c.resourceType = i
		case "resource_id":
			c.resourceID = i
		case "event_type":
			c.eventType = i
		case "payload":
			c.payload = i
		case "headers":
			c.headers = i
		case "subject":
			c.subject = i
		case "destination":
			c.destination = i
		case "trace_id":
			c.traceID = i
		case "occurred_at":
			c.occurredAt = i
		}
	}
	r.cols = c
	// A domain over jsonb has its own OID and is not recognised: its values
	// just get the full check.
	r.payloadJSONB = c.payload >= 0 && m.Columns[c.payload].DataType == pgtype.JSONBOID
	return r
}

// missing names required outbox columns the relation lacks.
func (r *relation) missing() []string {
	var out []string
	for name, i := range map[string]int{"event_id": r.cols.eventID, "event_type": r.cols.eventType, "payload": r.cols.payload} {
		if i < 0 {
			out = append(out, name)
		}
	}
	return out
}

// decodeInsert decodes the body of an Insert message (after the 'I' byte) into
// row, mapping columns by name. It returns the relation id. Column values are
// copied: src belongs to the connection's read buffer.
//
// Layout: Int32 relation id, Byte1 'N', Int16 column count, then per column a
// kind byte: 'n' (null), 'u' (unchanged toast), 't' or 'b' followed by Int32
// length and the value.
func decodeInsert(src []byte, rels map[uint32]*relation, row *envelope.Row) (uint32, *relation, error) {
	if len(src) < 7 {
		return 0, nil, fmt.Errorf("%w: insert message of %d bytes", ErrProtocol, len(src))
	}
	relID := binary.BigEndian.Uint32(src)
	rel := rels[relID]
	if rel == nil {
		return relID, nil, fmt.Errorf("%w: insert for unknown relation %d", ErrProtocol, relID)
	}
	if src[4] != 'N' {
		return relID, rel, fmt.Errorf("%w: insert tuple type %q", ErrProtocol, src[4])
	}
	if !rel.outbox {
		return relID, rel, nil
	}
	n := int(binary.BigEndian.Uint16(src[5:]))
	p := 7
	*row = envelope.Row{}
	// Text fields are gathered and copied into one string at the end: one
	// allocation per row instead of one per field (they share its lifetime).
	var texts [8]struct {
		dst *string
		val []byte
	}
	nt := 0
	for i := 0; i < n; i++ {
		if p >= len(src) {
			return relID, rel, fmt.Errorf("%w: tuple truncated at column %d", ErrProtocol, i)
		}
		kind := src[p]
		p++
		var val []byte
		switch kind {
		case 'n', 'u':
			continue
		case 't', 'b':
			if p+4 > len(src) {
				return relID, rel, fmt.Errorf("%w: tuple truncated at column %d", ErrProtocol, i)
			}
			l := int(binary.BigEndian.Uint32(src[p:]))
			p += 4
			if l < 0 || p+l > len(src) {
				return relID, rel, fmt.Errorf("%w: column %d length %d exceeds message", ErrProtocol, i, l)
			}
			val = src[p : p+l]
			p += l
		default:
			return relID, rel, fmt.Errorf("%w: column %d kind %q", ErrProtocol, i, kind)
		}
		c := &rel.cols
		var dst *string
		switch i {
		case c.eventID:
			dst = &row.EventID
		case c.resourceType:
			dst = &row.ResourceType
		case c.resourceID:
			dst = &row.ResourceID
		case c.eventType:
			dst = &row.EventType
		case c.payload:
			row.Payload = append([]byte(nil), val...)
			row.PayloadJSONB = kind == 't' && rel.payloadJSONB
		case c.headers:
			if len(val) > 2 { // "{}" carries nothing
				row.Headers = append([]byte(nil), val...)
			}
		case c.subject:
			dst = &row.Subject
		case c.destination:
			dst = &row.Destination
		case c.traceID:
			dst = &row.TraceID
		case c.occurredAt:
			dst = &row.OccurredAt
		}
		if dst != nil && len(val) > 0 {
			texts[nt].dst, texts[nt].val = dst, val
			nt++
		}
	}
	size := 0
	for _, t := range texts[:nt] {
		size += len(t.val)
	}
	var all strings.Builder
	all.Grow(size)
	for _, t := range texts[:nt] {
		all.Write(t.val)
	}
	rest := all.String()
	for _, t := range texts[:nt] {
		*t.dst, rest = rest[:len(t.val)], rest[len(t.val):]
	}
	return relID, rel, nil
}

// logicalMessage is a pgoutput Message ('M', sent with messages 'true'). Its
// prefix and content point into the connection's read buffer.
type logicalMessage struct {
	transactional bool
	lsn           pglogrepl.LSN // end of the message's WAL record
	prefix        []byte
	content       []byte
}

// decodeMessage decodes the body of a Message (after the 'M' byte).
//
// Layout: Int8 flags (1 = transactional), Int64 LSN, String prefix (NUL
// terminated), Int32 content length, Byte[n] content. With proto_version 1
// there is no transaction id in front: a transactional message arrives
// between the BEGIN and COMMIT of its transaction.
func decodeMessage(src []byte) (logicalMessage, error) {
	var m logicalMessage
	if len(src) < 1+8+1+4 {
		return m, fmt.Errorf("%w: logical message of %d bytes", ErrProtocol, len(src))
	}
	m.transactional = src[0]&1 != 0
	m.lsn = pglogrepl.LSN(binary.BigEndian.Uint64(src[1:]))
	rest := src[9:]
	end := bytes.IndexByte(rest, 0)
	if end < 0 {
		return m, fmt.Errorf("%w: logical message prefix not terminated", ErrProtocol)
	}
	m.prefix, rest = rest[:end], rest[end+1:]
	if len(rest) < 4 {
		return m, fmt.Errorf("%w: logical message truncated", ErrProtocol)
	}
	n := binary.BigEndian.Uint32(rest)
	if uint64(n) != uint64(len(rest)-4) {
		return m, fmt.Errorf("%w: logical message content of %d bytes in %d", ErrProtocol, n, len(rest)-4)
	}
	m.content = rest[4:]
	return m, nil
}
