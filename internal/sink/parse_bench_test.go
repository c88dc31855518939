package sink_test

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// BenchmarkMessageParse is what the sink does with every delivered message
// before its inbox transaction: the delivery metadata from the ack subject,
// the envelope, the source position and the lane key. It uses only the
// exported envelope and nats APIs, as the sink does.
//
//	go test ./internal/sink -run XXX -bench MessageParse -benchmem
func BenchmarkMessageParse(b *testing.B) {
	builder := &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{App: "shop", Dest: "billing"}}
	m, err := builder.Build(&envelope.Row{
		EventID: "0b7d4c1e-8f7a-4c1b-9d2e-3f4a5b6c7d8e", ResourceType: "user", ResourceID: "42", EventType: "user.updated",
		Payload: []byte(`{"id": 184467, "name": "Ada Lovelace", "plan": "enterprise", "email": "ada.lovelace@example.com", ` +
			`"roles": ["admin", "billing"], "active": true, "address": {"city": "London", "line1": "12 St James's Square", ` +
			`"country": "GB", "postcode": "SW1Y 4JH"}, "balance": 1234.56, "created_at": "2026-11-24T15:08:12.123456+00:00"}`),
		OccurredAt: "2026-11-24 15:08:12.123456+00",
	}, envelope.Position{CommitLSN: 0x16B374D848, TxIndex: 3})
	if err != nil {
		b.Fatal(err)
	}
	// A delivered message: bound to a subscription, the reply subject carrying
	// the delivery metadata.
	msg := &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header, Sub: &nats.Subscription{},
		Reply: "$JS.ACK.jetstream-bridge-stream.billing-workers.1.184467.184467.1795965000123456789.12"}
	b.SetBytes(int64(len(m.Body)))
	b.ReportAllocs()
	for b.Loop() {
		meta, err := msg.Metadata()
		if err != nil || meta.Sequence.Stream != 184467 {
			b.Fatal(err)
		}
		env, err := envelope.Parse(msg.Data)
		if err != nil {
			b.Fatal(err)
		}
		pos, ok := envelope.ParsePosition(msg.Header)
		if !ok || pos.TxIndex != 3 {
			b.Fatal("no position")
		}
		if key := env.ResourceType + "\x00" + env.ResourceID; len(key) == 0 {
			b.Fatal("no key")
		}
	}
}
