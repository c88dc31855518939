// Package tracing turns OpenTelemetry traces on from the standard OTEL_*
// environment variables and carries W3C trace context through NATS
// headers.
//
// It is a responsibility of its own, beside logging and metrics: deciding
// from the environment whether traces are exported at all, building the
// SDK's tracer provider and OTLP exporter, flushing it at shutdown, and
// reading and writing traceparent in a nats.Header. The relay and the sink
// only receive a trace.Tracer, nil when traces are off, and keep their
// spans beside the events they describe; nothing here knows about outbox
// rows, messages or handlers.
//
// Traces are off unless OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_TRACES_EXPORTER=none or
// OTEL_SDK_DISABLED=true turn them off again. When off no provider is
// built and callers hold a nil tracer, so that the hot path pays one nil
// check per event: no header is parsed and nothing is allocated for
// tracing.
//
// When on, spans go through a batch span processor to an OTLP exporter:
// over HTTP (http/protobuf, the default, or http/json) or gRPC
// (OTEL_EXPORTER_OTLP_PROTOCOL=grpc), which costs little more since the
// OTLP protocol package links gRPC anyway. The SDK reads most variables
// itself and this package does not read them again: the exporter the
// endpoints, headers, timeout, compression and TLS files; the resource
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the provider
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default: parent-based,
// always on) and the OTEL_BSP_* batch settings. This package adds what
// the Go SDK leaves to the application: the on/off decision, the choice of
// exporter by protocol, a default service name per binary, and refusing
// values it would otherwise ignore (an unknown protocol, exporter or
// sampler) at start.
package tracing
