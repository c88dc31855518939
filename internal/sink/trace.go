package sink

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
)

// Traces. With Options.Tracer set, every apply of an event (inbox row,
// handler, commit: one attempt) gets a span, the child of the message's
// traceparent, which the relay set to its own span; the handler runs
// inside it, so that a webhook call is its child and carries traceparent to
// the receiver (handler_http.go). A retry is a new apply span of the same
// trace, with its attempt number; a dead letter's publish is a span of its
// own in the message's trace.
//
// A batch (batch.go) applies events of different keys, usually of
// different requests and so of different traces, in one transaction. It
// gets one span per event, each the child of its own message, all covering
// the same transaction, rather than one batch span with the events as
// links: a batch span could sit in one trace only, and every other event's
// trace would lose its sink step.
//
// Span statuses (jetstream_bridge.status): processed, duplicate, stale,
// failed (the attempt failed and is retried; the error is the span's),
// dead (dead-lettered: exhausted, poison, refused by the handler), and in a batch rolled back for
// another event's failure, rolled_back (the event is applied again on its
// own, in a span of its own).

// startApply starts the span of one apply of it.
func (s *Sink) startApply(ctx context.Context, it *item, attempt, batch int) (context.Context, trace.Span) {
	ctx = tracing.Extract(ctx, it.msg.Headers())
	attrs := []attribute.KeyValue{
		tracing.System,
		tracing.MessagingOperation.String("process"),
		tracing.MessagingDestination.String(it.msg.Subject()),
		tracing.MessagingMessageID.String(it.eventID()),
		tracing.StreamSeq.Int64(int64(it.seq)),
		tracing.Attempt.Int(attempt),
	}
	if it.env != nil {
		attrs = append(attrs, tracing.EventType.String(it.env.EventType), tracing.Handler.String(s.handlerName(it)))
	}
	if batch > 1 {
		attrs = append(attrs, tracing.BatchSize.Int(batch))
	}
	return s.tracer.Start(ctx, "process "+it.msg.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// endApply ends an apply span with what the attempt came to.
func endApply(span trace.Span, out outcome, err error) {
	var (
		ee   *exhaustedError
		pe   *poisonError
		perm *PermanentError
	)
	switch {
	case err == nil:
		status := "processed"
		switch out {
		case outDuplicate:
			status = "duplicate"
		case outStale:
			status = "stale"
		case outDeadSeen:
			status = "dead"
		}
		span.SetAttributes(tracing.Status.String(status))
	case errors.As(err, &ee), errors.As(err, &pe), errors.As(err, &perm), errors.Is(err, ErrNoRoute):
		// Dead-lettered at once: the span of its dead letter follows.
		span.SetAttributes(tracing.Status.String("dead"))
		span.SetStatus(codes.Error, err.Error())
	default:
		span.SetAttributes(tracing.Status.String("failed"))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// startDeadLetter starts the span of a dead letter's publish.
func (s *Sink) startDeadLetter(ctx context.Context, it *item, class string) (context.Context, trace.Span) {
	ctx = tracing.Extract(ctx, it.msg.Headers())
	return s.tracer.Start(ctx, "publish "+s.dlqSubject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(tracing.System, tracing.MessagingOperation.String("send"),
			tracing.MessagingDestination.String(s.dlqSubject), tracing.MessagingMessageID.String(it.eventID()),
			tracing.Status.String("dead"), tracing.ErrorClass.String(class)))
}

// endDeadLetter ends a dead letter's span; err is why its copy could not be
// stored (it is tried again, in a new span).
func endDeadLetter(span trace.Span, reason string, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "dead letter not stored: "+err.Error())
	} else {
		span.SetStatus(codes.Error, reason)
	}
	span.End()
}

// handlerName names the handler that applies it, for its span: the route's
// handler under a Router.
func (s *Sink) handlerName(it *item) string {
	h := s.handler
	if r, ok := h.(*Router); ok {
		if h = r.Match(it.env.EventType, it.env.ResourceType, it.msg.Subject()); h == nil {
			return "none"
		}
	}
	if n, ok := h.(fmt.Stringer); ok {
		return n.String()
	}
	return fmt.Sprintf("%T", h)
}
