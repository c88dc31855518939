package cdc

import (
	"testing"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// benchInsert is an Insert message as pgoutput sends it for one row of the
// default outbox table (migrations/001_outbox.sql, in column order) with a
// realistic ~300-byte payload: what the relay decodes once per event.
func benchInsert(b *testing.B) (map[uint32]*relation, []byte) {
	b.Helper()
	cols := []struct {
		name string
		oid  uint32
	}{{"id", pgtype.Int8OID}, {"event_id", pgtype.UUIDOID}, {"resource_type", pgtype.TextOID},
		{"resource_id", pgtype.TextOID}, {"event_type", pgtype.TextOID}, {"payload", pgtype.JSONBOID},
		{"headers", pgtype.JSONBOID}, {"subject", pgtype.TextOID}, {"destination", pgtype.TextOID},
		{"trace_id", pgtype.TextOID}, {"occurred_at", pgtype.TimestamptzOID}}
	m := &pglogrepl.RelationMessage{RelationID: 16390, Namespace: "public", RelationName: "jetstream_outbox_events"}
	for _, c := range cols {
		m.Columns = append(m.Columns, &pglogrepl.RelationMessageColumn{Name: c.name, DataType: c.oid})
	}
	rels := map[uint32]*relation{16390: newRelation(m, "public", "jetstream_outbox_events")}
	msg := insertMsg(16390,
		col{'t', "184467"},
		col{'t', "0b7d4c1e-8f7a-4c1b-9d2e-3f4a5b6c7d8e"},
		col{'t', "user"},
		col{'t', "42"},
		col{'t', "user.updated"},
		col{'t', `{"id": 184467, "name": "Ada Lovelace", "plan": "enterprise", "email": "ada.lovelace@example.com", ` +
			`"roles": ["admin", "billing"], "active": true, "address": {"city": "London", "line1": "12 St James's Square", ` +
			`"country": "GB", "postcode": "SW1Y 4JH"}, "balance": 1234.56, "created_at": "2026-11-24T15:08:12.123456+00:00"}`},
		col{'t', "{}"},
		col{'n', ""},
		col{'n', ""},
		col{'n', ""},
		col{'t', "2026-11-24 15:08:12.123456+00"},
	)
	return rels, msg
}

// BenchmarkDecodeInsert decodes one Insert message into an envelope.Row.
func BenchmarkDecodeInsert(b *testing.B) {
	rels, msg := benchInsert(b)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	var row envelope.Row
	for b.Loop() {
		if _, _, err := decodeInsert(msg, rels, &row); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeToMessage is the relay's per-event work between the
// replication socket and the publisher, as reader.walData and
// Relay.message do it: a new Event, the decode, the commit LSN in text and
// the envelope with its headers. What is left after it is the JetStream
// client (see internal/publish BenchmarkPublisher). The relay formats the
// commit LSN once per transaction: tx=1 formats it for every event, as in
// one-row transactions; tx=many reuses it, as in large ones.
func BenchmarkDecodeToMessage(b *testing.B) {
	for _, bc := range []struct {
		name   string
		shared bool
	}{{"tx=1", false}, {"tx=many", true}} {
		b.Run(bc.name, func(b *testing.B) {
			rels, msg := benchInsert(b)
			builder := &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{App: "shop", Dest: "billing"}, MaxPayload: 1 << 20}
			lsn := pglogrepl.LSN(0x16B374D848)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if !bc.shared {
					lsn++ // a new transaction: its LSN is formatted again
				}
				ev := &Event{CommitLSN: lsn, Index: 3}
				if _, _, err := decodeInsert(msg, rels, &ev.Row); err != nil {
					b.Fatal(err)
				}
				m, err := builder.Build(&ev.Row, envelope.Position{CommitLSN: ev.CommitLSN, TxIndex: ev.Index})
				if err != nil {
					b.Fatal(err)
				}
				if len(m.Body) == 0 {
					b.Fatal("empty body")
				}
			}
		})
	}
}
