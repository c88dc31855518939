package relay

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
)

// Traces. With Options.Tracer set, every event gets one span, from the
// moment its message is built until JetStream acknowledges it (or its dead
// letter is stored): a span per event, not per transaction. The events of
// one transaction may come from different requests of the application,
// each with its own traceparent, and a span has one parent: per event, the
// relay's span is the child of its own row's traceparent, the sink's span
// the child of the relay's, and one request's trace reads app → relay →
// sink → webhook. A transaction span with the events as links would leave
// every trace but one without its relay step. The cost, one span per event,
// is paid only when traces are on; the batch span processor exports them
// in bulk off the hot path.
//
// The span's context replaces the message's traceparent header, so that
// the sink's span is its child; the trace id stays the row's, and the
// envelope's trace_id field is left as the row gave it. A row without a
// traceparent starts a trace at the relay and its message gets one, unless
// the extra header would take the message over the server's max_payload.

// traceparentLen is the wire size of a traceparent header line.
const traceparentLen = len(envelope.HeaderTraceparent) + 2 + 55 + 2

// startSpan starts o's span, the child of the row's traceparent, and writes
// the span's context into o's message.
func (r *Relay) startSpan(o *outgoing) {
	m := &o.pub
	parent := m.Header
	if o.ev.Err != nil {
		// A dead letter carries the raw row, not its headers: the parent can
		// only come from a traceparent in trace_id.
		parent = nats.Header{envelope.HeaderTraceparent: []string{o.ev.Row.TraceID}}
	}
	ctx := tracing.Extract(context.Background(), parent)
	attrs := []attribute.KeyValue{
		tracing.System,
		tracing.MessagingOperation.String("send"),
		tracing.MessagingDestination.String(m.Subject),
		tracing.MessagingMessageID.String(o.ev.Row.EventID),
		tracing.CommitLSN.String(m.Header.Get(envelope.HeaderCommitLSN)),
		tracing.TxIndex.Int(o.ev.Index),
	}
	ctx, o.span = r.tracer.Start(ctx, "publish "+m.Subject,
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	if m.Header.Get(envelope.HeaderTraceparent) == "" && r.opts.MaxPayload > 0 &&
		len(m.Body)+headerSize(m.Header)+traceparentLen > r.opts.MaxPayload {
		return
	}
	tracing.Inject(ctx, m.Header)
}

// headerSize is h's size on the wire.
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// endSpan ends an event's span with its outcome: m is the message or the
// dead letter that replaced it, ack nil when it was skipped (USE_DLQ=false).
func endSpan(span trace.Span, m *publish.Message, ack *jetstream.PubAck) {
	switch {
	case ack == nil:
		span.SetAttributes(tracing.Outcome.String("skipped"))
		span.SetStatus(codes.Error, "not published and USE_DLQ=false: skipped")
	case m.Header.Get(envelope.HeaderErrorClass) != "":
		span.SetAttributes(tracing.Outcome.String("dead_lettered"),
			tracing.ErrorClass.String(m.Header.Get(envelope.HeaderErrorClass)))
		span.SetStatus(codes.Error, m.Header.Get(envelope.HeaderError))
	case ack.Duplicate:
		span.SetAttributes(tracing.Outcome.String("duplicate"))
	default:
		span.SetAttributes(tracing.Outcome.String("stored"))
	}
	span.End()
}
