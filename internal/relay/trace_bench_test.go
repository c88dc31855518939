package relay

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
)

// discard is a span exporter that drops what it is given, so that the
// benchmark measures the relay's side of tracing: the span's start, the
// traceparent written into the message, the span's end and the batch
// processor's queue.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkMessage is the relay's per-event work between the stream and the
// publisher, and the span's end at the ack: an event becomes its message
// (pooled storage, as in the pipeline) and is released. traces=off is the
// default; it must allocate no more than before tracing existed (the
// builder's reused storage: 0 allocations per event for this row).
func BenchmarkMessage(b *testing.B) {
	row := envelope.Row{
		EventID: "0b7d4c1e-8f7a-4c1b-9d2e-3f4a5b6c7d8e", ResourceType: "user", ResourceID: "184467", EventType: "updated",
		Payload: []byte(`{"id": 184467, "name": "Ada Lovelace", "plan": "enterprise", "active": true}`), PayloadJSONB: true,
		Headers:    []byte(`{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`),
		OccurredAt: "2026-11-24 15:08:12.123456+00",
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	// The baseline: the builder alone, into reused storage.
	b.Run("build-only", func(b *testing.B) {
		bl := envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{App: "shop", Dest: "billing"}, MaxPayload: 1 << 20}
		var m envelope.Message
		b.ReportAllocs()
		for b.Loop() {
			if err := bl.BuildInto(&m, &row, envelope.Position{CommitLSN: 0x16B374D848, TxIndex: 3}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"traces=off", Options{}},
		{"traces=on", Options{Tracer: tp.Tracer("bench")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := &Relay{opts: bc.opts, tracer: bc.opts.Tracer, obs: nopObserver{}}
			r.builder = envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{App: "shop", Dest: "billing"}, MaxPayload: 1 << 20}
			ev := &cdc.Event{Row: row, CommitLSN: 0x16B374D848, Index: 3}
			ack := &jetstream.PubAck{}
			b.ReportAllocs()
			for b.Loop() {
				m := r.message(ev)
				if m == nil {
					b.Fatal("no message")
				}
				// What Settled does but the checkpoint: end the span, pool the storage.
				o := m.Owner.(*outgoing)
				if o.span != nil {
					endSpan(o.span, m, ack)
				}
				o.r, o.ev, o.pub, o.span = nil, nil, publish.Message{}, nil
				outgoingPool.Put(o)
			}
		})
	}
}
