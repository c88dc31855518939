package envelope_test

import (
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// benchPayload is a realistic ~300-byte jsonb payload, as Postgres prints it.
var benchPayload = []byte(`{"id": 184467, "name": "Ada Lovelace", "plan": "enterprise", "email": "ada.lovelace@example.com", ` +
	`"roles": ["admin", "billing"], "active": true, "address": {"city": "London", "line1": "12 St James's Square", ` +
	`"country": "GB", "postcode": "SW1Y 4JH"}, "balance": 1234.56, "created_at": "2026-11-24T15:08:12.123456+00:00"}`)

func benchRow() *envelope.Row {
	return &envelope.Row{
		EventID:      "0b7d4c1e-8f7a-4c1b-9d2e-3f4a5b6c7d8e",
		ResourceType: "user",
		EventType:    "updated",
		Payload:      benchPayload,
		Headers:      []byte(`{}`),
		TraceID:      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		OccurredAt:   "2026-11-24 15:08:12.123456+00",
	}
}

func BenchmarkBuild(b *testing.B) {
	bl := &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{Env: "production", App: "shop", Dest: "billing"}, MaxPayload: 1 << 20}
	pos := envelope.Position{CommitLSN: 0x16B374D848, TxIndex: 3}
	for _, bc := range []struct {
		name   string
		mutate func(*envelope.Row)
	}{
		{"typical", func(*envelope.Row) {}},
		{"row-headers", func(r *envelope.Row) { r.Headers = []byte(`{"X-Tenant": "acme", "X-Request-Id": "req-7781"}`) }},
		{"destination", func(r *envelope.Row) { r.Destination = "audit" }},
		{"resource-id", func(r *envelope.Row) { r.ResourceID = "184467" }},
		// What the relay builds for the default outbox table: jsonb payload.
		{"resource-id-jsonb", func(r *envelope.Row) { r.ResourceID, r.PayloadJSONB = "184467", true }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := benchRow()
			bc.mutate(r)
			m, err := bl.Build(r, pos)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(m.Body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bl.Build(r, pos); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// The relay's way: the storage of an acknowledged message is reused.
	b.Run("resource-id-jsonb-reused", func(b *testing.B) {
		r := benchRow()
		r.ResourceID, r.PayloadJSONB = "184467", true
		var m envelope.Message
		if err := bl.BuildInto(&m, r, pos); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(m.Body)))
		b.ReportAllocs()
		for b.Loop() {
			if err := bl.BuildInto(&m, r, pos); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	bl := &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{App: "shop", Dest: "billing"}}
	m, err := bl.Build(benchRow(), envelope.Position{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(m.Body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envelope.Parse(m.Body); err != nil {
			b.Fatal(err)
		}
	}
}
