package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Env is the part of the standard OpenTelemetry environment the bridge
// reads itself (to decide and to check), and lists in --help. The binaries
// embed it in their Config. The SDK reads these and the other OTEL_*
// variables from the process environment on its own.
type Env struct {
	Endpoint       string `env:"OTEL_EXPORTER_OTLP_ENDPOINT" help:"OTLP collector URL (e.g. http://otel-collector:4318; over HTTP spans go to /v1/traces); setting it turns traces on"`
	TracesEndpoint string `env:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" help:"OTLP traces URL, used as is over HTTP (e.g. http://otel-collector:4318/v1/traces); setting it turns traces on"`
	Protocol       string `env:"OTEL_EXPORTER_OTLP_PROTOCOL" envDefault:"http/protobuf" help:"http/protobuf (port 4318), http/json or grpc (port 4317)"`
	TracesProtocol string `env:"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" help:"OTEL_EXPORTER_OTLP_PROTOCOL for traces only"`
	Headers        string `env:"OTEL_EXPORTER_OTLP_HEADERS" help:"key=value,... sent with every export (e.g. an API key)"`
	ServiceName    string `env:"OTEL_SERVICE_NAME" help:"service.name of the spans (default jetstream-bridge-relay or jetstream-bridge-sink)"`
	Attributes     string `env:"OTEL_RESOURCE_ATTRIBUTES" help:"key=value,... resource attributes of the spans (e.g. deployment.environment=prod)"`
	Sampler        string `env:"OTEL_TRACES_SAMPLER" help:"always_on, always_off, traceidratio, parentbased_always_on (default), parentbased_always_off or parentbased_traceidratio"`
	SamplerArg     string `env:"OTEL_TRACES_SAMPLER_ARG" help:"the ratio (0 to 1) of the traceidratio samplers"`
	Exporter       string `env:"OTEL_TRACES_EXPORTER" envDefault:"otlp" help:"otlp, or none to keep traces off"`
	SDKDisabled    string `env:"OTEL_SDK_DISABLED" envDefault:"false" help:"true turns traces off whatever else is set"`
}

// Enabled reports whether e asks for traces: an OTLP endpoint is set, the
// traces exporter is otlp and the SDK is not disabled.
func (e *Env) Enabled() bool {
	if strings.EqualFold(strings.TrimSpace(e.SDKDisabled), "true") {
		return false
	}
	if strings.TrimSpace(e.Endpoint) == "" && strings.TrimSpace(e.TracesEndpoint) == "" {
		return false
	}
	for _, x := range strings.Split(e.Exporter, ",") {
		if strings.TrimSpace(x) == "otlp" {
			return true
		}
	}
	return strings.TrimSpace(e.Exporter) == ""
}

// Validate checks the values the bridge decides on, naming the variable and
// the accepted form. Values that do not matter while traces are off are
// still checked: a typo should not wait for the day traces are turned on.
func (e *Env) Validate() error {
	var errs []error
	for _, x := range strings.Split(e.Exporter, ",") {
		switch strings.TrimSpace(x) {
		case "", "otlp", "none":
		default:
			errs = append(errs, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: expected otlp or none", e.Exporter))
		}
	}
	for _, p := range []struct{ name, value string }{
		{"OTEL_EXPORTER_OTLP_PROTOCOL", e.Protocol}, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", e.TracesProtocol},
	} {
		switch strings.TrimSpace(p.value) {
		case "", "http/protobuf", "http/json", "grpc":
		default:
			errs = append(errs, fmt.Errorf("%s=%q: expected http/protobuf, http/json or grpc", p.name, p.value))
		}
	}
	for _, u := range []struct{ name, value string }{
		{"OTEL_EXPORTER_OTLP_ENDPOINT", e.Endpoint}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e.TracesEndpoint},
	} {
		v := strings.TrimSpace(u.value)
		if v != "" && !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") {
			errs = append(errs, fmt.Errorf("%s=%q: expected an http:// or https:// URL, e.g. http://otel-collector:4318", u.name, v))
		}
	}
	sampler := strings.ToLower(strings.TrimSpace(e.Sampler))
	switch sampler {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
	case "traceidratio", "parentbased_traceidratio":
		if arg := strings.TrimSpace(e.SamplerArg); arg != "" {
			if r, err := strconv.ParseFloat(arg, 64); err != nil || r < 0 || r > 1 {
				errs = append(errs, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: expected a ratio from 0 to 1 (e.g. 0.1)", e.SamplerArg))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", e.Sampler))
	}
	return errors.Join(errs...)
}

// Provider exports the process's spans. A nil *Provider is traces off:
// its Tracer is nil and Shutdown does nothing.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// Start builds the tracer provider when e asks for traces, else returns
// nil. service is the default service.name (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES win); version goes into service.version. Nothing
// connects here: the exporter sends its first batch within seconds, and
// failed exports are logged at warn level (the spans are dropped, the
// events are not affected).
func Start(ctx context.Context, e *Env, service, version string, log zerolog.Logger) (*Provider, error) {
	if !e.Enabled() {
		return nil, nil
	}
	// The exporter reads the endpoints, headers, timeout, compression and
	// TLS files from the environment itself.
	var (
		exp      sdktrace.SpanExporter
		err      error
		protocol = e.protocol()
	)
	if protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp trace exporter: %w", err)
	}
	// Later sources win: the default name, then OTEL_RESOURCE_ATTRIBUTES,
	// then OTEL_SERVICE_NAME.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", service), attribute.String("service.version", version)),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("trace resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn().Err(err).Msg("opentelemetry: cannot export spans")
	}))
	// The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK;
	// without them a span follows its parent's sampling decision and a
	// root span is sampled.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info().Str("service", serviceName(res)).Str("protocol", protocol).Msg("exporting traces over OTLP")
	return &Provider{tp: tp}, nil
}

// protocol is the OTLP protocol for traces: http/protobuf, http/json or
// grpc.
func (e *Env) protocol() string {
	if p := strings.TrimSpace(e.TracesProtocol); p != "" {
		return p
	}
	if p := strings.TrimSpace(e.Protocol); p != "" {
		return p
	}
	return "http/protobuf"
}

func serviceName(res *resource.Resource) string {
	v, _ := res.Set().Value("service.name")
	return v.AsString()
}

// Tracer returns the tracer the relay and the sink start their spans
// with; nil when traces are off.
func (p *Provider) Tracer() trace.Tracer {
	if p == nil {
		return nil
	}
	return p.tp.Tracer("github.com/jetstream-bridge/jetstream-bridge")
}

// Shutdown exports the spans still buffered and stops the exporter,
// giving up when ctx ends: a collector that does not answer must not hold
// a process that was asked to stop.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// propagator is W3C Trace Context: traceparent and tracestate.
var propagator = propagation.TraceContext{}

// Extract returns ctx with the remote span context h carries in
// traceparent (and tracestate); ctx unchanged when it carries none or an
// invalid one.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return propagator.Extract(ctx, natsCarrier(h))
}

// Inject writes the span context of ctx into h as traceparent (and
// tracestate when there is one), replacing what h carried.
func Inject(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, natsCarrier(h))
}

// InjectHTTP writes the span context of ctx into an HTTP request's headers.
func InjectHTTP(ctx context.Context, h http.Header) {
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// natsCarrier reads and writes trace context in NATS headers. NATS header
// names are case-sensitive: the bridge and the gem write traceparent in
// lower case, as W3C Trace Context spells it; the canonical HTTP spelling
// (Traceparent) of another producer is read too.
type natsCarrier nats.Header

func (c natsCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	if v := c[textproto.CanonicalMIMEHeaderKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c natsCarrier) Set(key, value string) {
	delete(c, textproto.CanonicalMIMEHeaderKey(key))
	c[key] = []string{value}
}

func (c natsCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
