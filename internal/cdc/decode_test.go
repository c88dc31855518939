package cdc

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// col is one tuple column for building Insert messages by hand.
type col struct {
	kind byte
	val  string
}

func insertMsg(relID uint32, cols ...col) []byte {
	b := binary.BigEndian.AppendUint32(nil, relID)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.kind)
		if c.kind == 't' || c.kind == 'b' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.val)))
			b = append(b, c.val...)
		}
	}
	return b
}

func rel(names ...string) *pglogrepl.RelationMessage {
	m := &pglogrepl.RelationMessage{RelationID: 7, Namespace: "public", RelationName: "jetstream_outbox_events"}
	for _, n := range names {
		m.Columns = append(m.Columns, &pglogrepl.RelationMessageColumn{Name: n})
	}
	return m
}

// TestDecodeInsertByColumnName: column order and extra columns do not matter.
func TestDecodeInsertByColumnName(t *testing.T) {
	r := newRelation(rel("extra", "payload", "event_type", "id", "event_id", "resource_type", "resource_id",
		"headers", "subject", "destination", "trace_id", "occurred_at"), "public", "jetstream_outbox_events")
	rels := map[uint32]*relation{7: r}
	msg := insertMsg(7, col{'t', "ignored"}, col{'t', `{"a":1}`}, col{'t', "created"}, col{'t', "99"},
		col{'t', "e-1"}, col{'t', "user"}, col{'n', ""}, col{'t', `{"h":"v"}`}, col{'n', ""}, col{'t', "b"},
		col{'t', "tr"}, col{'t', "2026-01-02 03:04:05+00"})
	var row envelope.Row
	_, got, err := decodeInsert(msg, rels, &row)
	if err != nil || got != r {
		t.Fatal(err)
	}
	want := envelope.Row{EventID: "e-1", ResourceType: "user", EventType: "created", Payload: []byte(`{"a":1}`),
		Headers: []byte(`{"h":"v"}`), Destination: "b", TraceID: "tr", OccurredAt: "2026-01-02 03:04:05+00"}
	if row.EventID != want.EventID || row.ResourceType != want.ResourceType || row.ResourceID != "" ||
		row.EventType != want.EventType || string(row.Payload) != string(want.Payload) ||
		string(row.Headers) != string(want.Headers) || row.Subject != "" || row.Destination != "b" ||
		row.TraceID != "tr" || row.OccurredAt != want.OccurredAt {
		t.Fatalf("row=%+v", row)
	}
	// Values are copies: scribbling over the message must not change the row.
	for i := range msg {
		msg[i] = 'X'
	}
	if string(row.Payload) != `{"a":1}` || row.EventID != "e-1" || row.ResourceType != "user" ||
		row.EventType != "created" || row.Destination != "b" || row.TraceID != "tr" ||
		row.OccurredAt != "2026-01-02 03:04:05+00" {
		t.Fatalf("row aliases the message buffer: %+v", row)
	}
}

func TestDecodeInsertOtherTableIgnored(t *testing.T) {
	r := newRelation(&pglogrepl.RelationMessage{RelationID: 8, Namespace: "public", RelationName: "users"}, "public", "jetstream_outbox_events")
	var row envelope.Row
	_, got, err := decodeInsert(insertMsg(8, col{'t', "x"}), map[uint32]*relation{8: r}, &row)
	if err != nil || got.outbox || row.EventID != "" {
		t.Fatalf("other table decoded: %v %+v", err, row)
	}
}

func TestDecodeInsertMissingColumns(t *testing.T) {
	r := newRelation(rel("event_id", "resource_type"), "public", "jetstream_outbox_events")
	if m := r.missing(); len(m) != 2 {
		t.Fatalf("missing=%v, want event_type and payload", m)
	}
}

func TestDecodeInsertProtocolErrors(t *testing.T) {
	r := newRelation(rel("event_id", "payload"), "public", "jetstream_outbox_events")
	rels := map[uint32]*relation{7: r}
	good := insertMsg(7, col{'t', "e"}, col{'t', "{}"})
	for name, b := range map[string][]byte{
		"short":            good[:3],
		"unknown relation": insertMsg(9, col{'t', "e"}),
		"bad tuple type":   append([]byte{0, 0, 0, 7, 'K'}, good[5:]...),
		"truncated value":  good[:len(good)-1],
		"truncated column": good[:len(good)-6],
		"bad kind":         insertMsg(7, col{'x', ""}),
	} {
		var row envelope.Row
		if _, _, err := decodeInsert(b, rels, &row); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err=%v, want ErrProtocol", name, err)
		}
	}
}

func FuzzDecodeInsert(f *testing.F) {
	f.Add(insertMsg(7, col{'t', "e"}, col{'t', "{}"}, col{'n', ""}))
	f.Add(insertMsg(7, col{'u', ""}, col{'b', "\x00\x01"}))
	f.Add([]byte{0, 0, 0, 7, 'N', 0xff, 0xff})
	r := newRelation(rel("event_id", "payload", "headers"), "public", "jetstream_outbox_events")
	rels := map[uint32]*relation{7: r}
	f.Fuzz(func(t *testing.T, b []byte) {
		var row envelope.Row
		_, _, err := decodeInsert(b, rels, &row)
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("error not classified as protocol error: %v", err)
		}
	})
}

// The payload column's type decides PayloadJSONB: jsonb in text form only.
func TestDecodeInsertPayloadJSONB(t *testing.T) {
	for _, tt := range []struct {
		name string
		oid  uint32
		kind byte
		want bool
	}{
		{"jsonb", pgtype.JSONBOID, 't', true},
		{"jsonb binary", pgtype.JSONBOID, 'b', false},
		{"json", pgtype.JSONOID, 't', false},
		{"text", pgtype.TextOID, 't', false},
		{"unknown (domain)", 16500, 't', false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := rel("event_id", "payload")
			m.Columns[1].DataType = tt.oid
			rels := map[uint32]*relation{7: newRelation(m, "public", "jetstream_outbox_events")}
			var row envelope.Row
			if _, _, err := decodeInsert(insertMsg(7, col{'t', "e"}, col{tt.kind, `{"a": 1}`}), rels, &row); err != nil {
				t.Fatal(err)
			}
			if row.PayloadJSONB != tt.want || string(row.Payload) != `{"a": 1}` {
				t.Fatalf("PayloadJSONB=%v payload=%q, want %v", row.PayloadJSONB, row.Payload, tt.want)
			}
			// A NULL payload is not a jsonb value, whatever the column.
			row = envelope.Row{}
			if _, _, err := decodeInsert(insertMsg(7, col{'t', "e"}, col{'n', ""}), rels, &row); err != nil {
				t.Fatal(err)
			}
			if row.PayloadJSONB || row.Payload != nil {
				t.Fatalf("NULL payload: PayloadJSONB=%v payload=%q", row.PayloadJSONB, row.Payload)
			}
		})
	}
	// No payload column at all (the row is dead-lettered for it).
	if r := newRelation(rel("event_id"), "public", "jetstream_outbox_events"); r.payloadJSONB {
		t.Fatal("payloadJSONB without a payload column")
	}
}

func logicalMsg(flags byte, lsn uint64, prefix, content string) []byte {
	b := []byte{flags}
	b = binary.BigEndian.AppendUint64(b, lsn)
	b = append(b, prefix...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(content)))
	return append(b, content...)
}

func TestDecodeMessage(t *testing.T) {
	src := logicalMsg(1, 0x16B374D848, "jetstream_bridge_outbox", `{"event_id":"e"}`)
	m, err := decodeMessage(src)
	if err != nil {
		t.Fatal(err)
	}
	// pglogrepl's own decoder must agree on a well-formed message.
	var ref pglogrepl.LogicalDecodingMessage
	if err := ref.Decode(src); err != nil {
		t.Fatal(err)
	}
	if !m.transactional || m.lsn != ref.LSN || string(m.prefix) != ref.Prefix || string(m.content) != string(ref.Content) {
		t.Fatalf("decoded %+v, pglogrepl %+v", m, ref)
	}
	if m, err := decodeMessage(logicalMsg(0, 1, "", "")); err != nil || m.transactional || len(m.prefix) != 0 || len(m.content) != 0 {
		t.Fatalf("non-transactional empty message: %+v, %v", m, err)
	}
	for name, bad := range map[string][]byte{
		"short":               src[:10],
		"unterminated prefix": src[:9+5],
		"no length":           logicalMsg(1, 1, "p", "")[:12],
		"content truncated":   src[:len(src)-1],
		"content too long":    append(append([]byte{}, src...), 'x'),
	} {
		if _, err := decodeMessage(bad); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err=%v, want ErrProtocol", name, err)
		}
	}
}
