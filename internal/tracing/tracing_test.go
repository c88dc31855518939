package tracing_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
)

// env is an Env as the configuration reads it: the defaults, then set.
func env(set func(*tracing.Env)) *tracing.Env {
	e := &tracing.Env{Protocol: "http/protobuf", Exporter: "otlp", SDKDisabled: "false"}
	if set != nil {
		set(e)
	}
	return e
}

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*tracing.Env)
		want bool
	}{
		{"nothing set", nil, false},
		{"endpoint", func(e *tracing.Env) { e.Endpoint = "http://collector:4318" }, true},
		{"traces endpoint", func(e *tracing.Env) { e.TracesEndpoint = "http://collector:4318/v1/traces" }, true},
		{"blank endpoint", func(e *tracing.Env) { e.Endpoint = "  " }, false},
		{"exporter none", func(e *tracing.Env) { e.Endpoint = "http://c:4318"; e.Exporter = "none" }, false},
		{"exporter list", func(e *tracing.Env) { e.Endpoint = "http://c:4318"; e.Exporter = "none, otlp" }, true},
		{"sdk disabled", func(e *tracing.Env) { e.Endpoint = "http://c:4318"; e.SDKDisabled = "true" }, false},
		{"sdk disabled any case", func(e *tracing.Env) { e.Endpoint = "http://c:4318"; e.SDKDisabled = " TRUE " }, false},
		{"sdk disabled other value", func(e *tracing.Env) { e.Endpoint = "http://c:4318"; e.SDKDisabled = "yes" }, true},
		{"service name alone", func(e *tracing.Env) { e.ServiceName = "orders" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := env(tc.set).Enabled(); got != tc.want {
				t.Fatalf("Enabled()=%v, want %v", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*tracing.Env)
		want string // "" = valid; else a part of the error
	}{
		{"defaults", nil, ""},
		{"http/json", func(e *tracing.Env) { e.Protocol = "http/json" }, ""},
		{"grpc", func(e *tracing.Env) { e.Protocol = "grpc" }, ""},
		{"traces protocol", func(e *tracing.Env) { e.TracesProtocol = "thrift" }, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=\"thrift\""},
		{"bad protocol", func(e *tracing.Env) { e.Protocol = "udp" }, "expected http/protobuf, http/json or grpc"},
		{"exporter console", func(e *tracing.Env) { e.Exporter = "console" }, "OTEL_TRACES_EXPORTER=\"console\": expected otlp or none"},
		{"endpoint without scheme", func(e *tracing.Env) { e.Endpoint = "collector:4318" }, "OTEL_EXPORTER_OTLP_ENDPOINT=\"collector:4318\": expected an http://"},
		{"https endpoint", func(e *tracing.Env) { e.TracesEndpoint = "https://c/v1/traces" }, ""},
		{"ratio sampler", func(e *tracing.Env) { e.Sampler = "parentbased_traceidratio"; e.SamplerArg = "0.25" }, ""},
		{"ratio out of range", func(e *tracing.Env) { e.Sampler = "traceidratio"; e.SamplerArg = "2" }, "OTEL_TRACES_SAMPLER_ARG=\"2\""},
		{"unknown sampler", func(e *tracing.Env) { e.Sampler = "sometimes" }, "OTEL_TRACES_SAMPLER=\"sometimes\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := env(tc.set).Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestStartOff: without an endpoint no provider is built, its tracer is nil
// (the relay and the sink skip every span on a nil check) and Shutdown is a
// no-op.
func TestStartOff(t *testing.T) {
	for _, e := range []*tracing.Env{
		env(nil),
		env(func(e *tracing.Env) { e.Endpoint = "http://127.0.0.1:1"; e.SDKDisabled = "true" }),
		env(func(e *tracing.Env) { e.Endpoint = "http://127.0.0.1:1"; e.Exporter = "none" }),
	} {
		p, err := tracing.Start(context.Background(), e, "svc", "v", zerolog.Nop())
		if err != nil || p != nil {
			t.Fatalf("Start(%+v) = %v, %v; want nil, nil", e, p, err)
		}
		if p.Tracer() != nil {
			t.Fatal("a nil provider has a tracer")
		}
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStartOn: with an endpoint a provider is built without connecting, and
// its spans are recorded.
func TestStartOn(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	p, err := tracing.Start(context.Background(), env(func(e *tracing.Env) { e.Endpoint = "http://127.0.0.1:1" }), "svc", "v", zerolog.Nop())
	if err != nil || p == nil {
		t.Fatalf("Start = %v, %v", p, err)
	}
	_, span := p.Tracer().Start(context.Background(), "x")
	if !span.IsRecording() {
		t.Fatal("span not recording")
	}
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	_ = p.Shutdown(ctx) // the collector is unreachable: bounded by ctx
}

func TestPropagation(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, key := range []string{"traceparent", "Traceparent"} {
		h := nats.Header{key: []string{tp}}
		ctx := tracing.Extract(context.Background(), h)
		sc := trace.SpanContextFromContext(ctx)
		if got, want := sc.TraceID().String(), "4bf92f3577b34da6a3ce929d0e0e4736"; got != want {
			t.Fatalf("%s: trace id %s, want %s", key, got, want)
		}
		if !sc.IsRemote() || !sc.IsSampled() {
			t.Fatalf("%s: span context %+v", key, sc)
		}
		// Injecting a child's context replaces the header, in lower case.
		child := trace.NewSpanContext(trace.SpanContextConfig{TraceID: sc.TraceID(), SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled})
		tracing.Inject(trace.ContextWithSpanContext(context.Background(), child), h)
		if got, want := h.Get("traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"; got != want {
			t.Fatalf("%s: injected %q, want %q", key, got, want)
		}
		if len(h) != 1 {
			t.Fatalf("%s: headers after inject: %v", key, h)
		}
	}
	if sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), nats.Header{"traceparent": []string{"garbage"}})); sc.IsValid() {
		t.Fatalf("garbage traceparent gave %+v", sc)
	}
}

// traceServer is an OTLP/gRPC collector that counts the spans it is sent.
type traceServer struct {
	coltracepb.UnimplementedTraceServiceServer
	spans chan string
}

func (s *traceServer) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s.spans <- sp.GetName()
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestStartGRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports over gRPC to the
// endpoint; Shutdown flushes what is queued.
func TestStartGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ts := &traceServer{spans: make(chan string, 10)}
	coltracepb.RegisterTraceServiceServer(srv, ts)
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)

	endpoint := "http://" + lis.Addr().String()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	p, err := tracing.Start(context.Background(), env(func(e *tracing.Env) { e.Endpoint, e.Protocol = endpoint, "grpc" }), "svc", "v", zerolog.Nop())
	if err != nil || p == nil {
		t.Fatalf("Start = %v, %v", p, err)
	}
	_, span := p.Tracer().Start(context.Background(), "over-grpc")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-ts.spans:
		if name != "over-grpc" {
			t.Fatalf("span %q", name)
		}
	default:
		t.Fatal("no span received over gRPC by the end of Shutdown")
	}
}
