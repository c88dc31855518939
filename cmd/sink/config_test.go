package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
)

func baseEnv() map[string]string {
	return map[string]string{
		"DATABASE_URL":    "postgres://app:secret@localhost:5432/app",
		"APP_NAME":        "orders",
		"DESTINATION_APP": "billing",
		"HANDLER":         "sql:public.apply_event",
	}
}

func load(t *testing.T, env map[string]string) (*Config, error) {
	t.Helper()
	m := newMain(&bytes.Buffer{}, &bytes.Buffer{}, env)
	return m.load(true)
}

func TestConfig_Defaults(t *testing.T) {
	c, err := load(t, baseEnv())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, got, want string }{
		{"durable", c.Durable(), "orders-workers"},
		{"filter", c.Filter(), "billing.sync.orders"},
		{"dlq", c.DLQ(), "orders.sync.dlq"},
		{"inbox", c.InboxTable, "public.jetstream_inbox_events"},
		{"mode", c.ConsumerMode, "pull"},
		{"stream", c.StreamName, "jetstream-bridge-stream"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s=%q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if c.MaxDeliver != 5 || c.AckWait != 30*time.Second || c.BatchSize != 25 || c.Concurrency != 4 ||
		c.SkipStale || c.WebhookTimeout != 10*time.Second || c.ShutdownTimeout != 30*time.Second || !c.AutoProvision || !c.UseDLQ {
		t.Fatalf("defaults: %+v", c)
	}
	want := []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second}
	if !slices.Equal(c.Backoff, want) {
		t.Fatalf("BACKOFF=%v, want %v", c.Backoff, want)
	}
	if c.Tracing.Enabled() {
		t.Fatal("traces on without OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if got := c.MaxHeld(); got != 150 {
		t.Fatalf("MaxHeld=%d, want 2*25+4*25", got)
	}

	env := baseEnv()
	env["ENV_NAME"] = "production"
	env["ACK_WAIT"] = "45" // bare integers are seconds
	env["BACKOFF"] = "1, 2,500ms"
	env["SHUTDOWN_TIMEOUT"] = "2m"
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://otel-collector:4318"
	c, err = load(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Tracing.Enabled() {
		t.Fatal("traces off with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	if c.Filter() != "production.billing.sync.orders" || c.DLQ() != "production.orders.sync.dlq" {
		t.Fatalf("with ENV_NAME: filter %q, dlq %q", c.Filter(), c.DLQ())
	}
	if c.AckWait != 45*time.Second || !slices.Equal(c.Backoff, []time.Duration{time.Second, 2 * time.Second, 500 * time.Millisecond}) || c.ShutdownTimeout != 2*time.Minute {
		t.Fatalf("durations: ack wait %s, backoff %v, shutdown %s", c.AckWait, c.Backoff, c.ShutdownTimeout)
	}

	// FILTER_SUBJECT makes DESTINATION_APP optional.
	env = baseEnv()
	delete(env, "DESTINATION_APP")
	env["FILTER_SUBJECT"] = "*.sync.orders"
	if c, err := load(t, env); err != nil || c.Filter() != "*.sync.orders" {
		t.Fatalf("FILTER_SUBJECT without DESTINATION_APP: %v", err)
	}
}

func TestConfig_Errors(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(routes, []byte(`[{"handler":"sql:public.a"},{"subject":"a..b","handler":"sql:public.b"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		set  map[string]string
		del  []string
		want []string // every one must appear in the error
	}{
		{name: "no handler", del: []string{"HANDLER"}, want: []string{"HANDLER or ROUTES_FILE is required"}},
		{name: "both", set: map[string]string{"ROUTES_FILE": routes}, want: []string{"HANDLER and ROUTES_FILE are both set"}},
		{name: "injection", set: map[string]string{"HANDLER": "sql:public.x; drop table y"}, want: []string{"HANDLER=", "sql:schema.name"}},
		{name: "quoted", set: map[string]string{"HANDLER": `sql:"public"."x"`}, want: []string{"HANDLER="}},
		{name: "scheme", set: map[string]string{"HANDLER": "ftp://x/y"}, want: []string{"HANDLER=", "http"}},
		{name: "bad route", del: []string{"HANDLER"}, set: map[string]string{"ROUTES_FILE": routes}, want: []string{"ROUTES_FILE", "routes[1]: subject"}},
		{name: "missing routes file", del: []string{"HANDLER"}, set: map[string]string{"ROUTES_FILE": "/nonexistent/routes.yaml"}, want: []string{"ROUTES_FILE"}},
		{name: "max deliver", set: map[string]string{"MAX_DELIVER": "0"}, want: []string{"MAX_DELIVER=0", "1 to 1000"}},
		{name: "max held bytes", set: map[string]string{"MAX_HELD_BYTES": "1000"}, want: []string{"MAX_HELD_BYTES=1000", "65536 to 1073741824"}},
		{name: "max deliver text", set: map[string]string{"MAX_DELIVER": "five"}, want: []string{`MAX_DELIVER="five"`, "whole number"}},
		{name: "ack wait", set: map[string]string{"ACK_WAIT": "soon"}, want: []string{`ACK_WAIT="soon"`, "duration"}},
		{name: "ack wait short", set: map[string]string{"ACK_WAIT": "10ms"}, want: []string{"ACK_WAIT=10ms", "at least 1s"}},
		{name: "backoff negative", set: map[string]string{"BACKOFF": "1s,-2s"}, want: []string{"BACKOFF", "duration"}},
		{name: "backoff zero", set: map[string]string{"BACKOFF": "1s,0"}, want: []string{"BACKOFF", "positive"}},
		{name: "backoff text", set: map[string]string{"BACKOFF": "1s,later"}, want: []string{"BACKOFF", "duration"}},
		{name: "batch", set: map[string]string{"BATCH_SIZE": "0"}, want: []string{"BATCH_SIZE=0"}},
		{name: "concurrency", set: map[string]string{"CONCURRENCY": "1000"}, want: []string{"CONCURRENCY=1000"}},
		{name: "mode", set: map[string]string{"CONSUMER_MODE": "poll"}, want: []string{`CONSUMER_MODE="poll"`, "pull or push"}},
		{name: "deliver subject in pull mode", set: map[string]string{"DELIVER_SUBJECT": "x.y"}, want: []string{"DELIVER_SUBJECT", "CONSUMER_MODE is pull"}},
		{name: "deliver subject wildcard", set: map[string]string{"CONSUMER_MODE": "push", "DELIVER_SUBJECT": "x.>"}, want: []string{`DELIVER_SUBJECT="x.>"`}},
		{name: "deliver subject cycle", set: map[string]string{"CONSUMER_MODE": "push", "DELIVER_SUBJECT": "billing.sync.orders"}, want: []string{"DELIVER_SUBJECT", "overlaps"}},
		{name: "skip stale", set: map[string]string{"SKIP_STALE": "maybe"}, want: []string{`SKIP_STALE="maybe"`, "true or false"}},
		{name: "filter", set: map[string]string{"FILTER_SUBJECT": "billing..orders"}, want: []string{"FILTER_SUBJECT", "empty"}},
		{name: "filter covers dlq", set: map[string]string{"FILTER_SUBJECT": "orders.sync.>"}, want: []string{"FILTER_SUBJECT", "dead-letter subject"}},
		{name: "no destination", del: []string{"DESTINATION_APP"}, want: []string{"DESTINATION_APP is required unless FILTER_SUBJECT"}},
		{name: "inbox table", set: map[string]string{"INBOX_TABLE": "public.x; drop"}, want: []string{"INBOX_TABLE"}},
		{name: "durable", set: map[string]string{"DURABLE_NAME": "a.b"}, want: []string{`DURABLE_NAME "a.b"`}},
		{name: "webhook timeout", set: map[string]string{"WEBHOOK_TIMEOUT": "0"}, want: []string{"WEBHOOK_TIMEOUT"}},
		{name: "partitions range", set: map[string]string{"PARTITIONS": "5000"}, want: []string{"PARTITIONS=5000"}},
		{name: "partitions push", set: map[string]string{"PARTITIONS": "16", "CONSUMER_MODE": "push"}, want: []string{"PARTITIONS needs CONSUMER_MODE=pull"}},
		{name: "partitions wildcard filter", set: map[string]string{"PARTITIONS": "16", "FILTER_SUBJECT": "billing.sync.*"}, want: []string{"FILTER_SUBJECT", "plain subject"}},
		{name: "partition lease", set: map[string]string{"PARTITIONS": "16", "PARTITION_LEASE": "100ms"}, want: []string{"PARTITION_LEASE=100ms"}},
		{name: "no app", del: []string{"APP_NAME"}, want: []string{"APP_NAME is required"}},
		{name: "no database", del: []string{"DATABASE_URL"}, want: []string{"DATABASE_URL is required"}},
		{name: "otlp protocol", set: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, want: []string{`OTEL_EXPORTER_OTLP_PROTOCOL="udp"`, "grpc"}},
		{name: "otel exporter", set: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, want: []string{`OTEL_TRACES_EXPORTER="zipkin"`, "otlp or none"}},
		{name: "otel sampler arg", set: map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, want: []string{`OTEL_TRACES_SAMPLER_ARG="half"`}},
		{name: "otel endpoint", set: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, want: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := baseEnv()
			for _, k := range tc.del {
				delete(env, k)
			}
			for k, v := range tc.set {
				env[k] = v
			}
			_, err := load(t, env)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestConfig_PushMode(t *testing.T) {
	env := baseEnv()
	env["CONSUMER_MODE"] = "push"
	c, err := load(t, env)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Push() || c.Deliver() != "_bridge.orders-workers" {
		t.Fatalf("push: %v, deliver subject %q", c.Push(), c.Deliver())
	}
	spec := c.consumerSpec()
	if spec.DeliverSubject != "_bridge.orders-workers" || spec.Config().DeliverGroup != "orders-workers" {
		t.Fatalf("consumer spec: %+v", spec.Config())
	}
	env["ENV_NAME"], env["DURABLE_NAME"] = "production", "w"
	if c, err := load(t, env); err != nil || c.Deliver() != "production._bridge.w" {
		t.Fatalf("with ENV_NAME and DURABLE_NAME: %v, %q", err, c.Deliver())
	}
	env["DELIVER_SUBJECT"] = "deliver.orders"
	if c, err := load(t, env); err != nil || c.Deliver() != "deliver.orders" {
		t.Fatalf("DELIVER_SUBJECT: %v", err)
	}
	if c, err := load(t, baseEnv()); err != nil || c.consumerSpec().DeliverSubject != "" {
		t.Fatalf("pull mode: %v, or it has a deliver subject", err)
	}
}

// TestConfig_HandlerOnlyForRun: only `sink run` applies events; provision,
// status and the DLQ commands load without HANDLER or ROUTES_FILE, and do
// not read them.
func TestConfig_HandlerOnlyForRun(t *testing.T) {
	env := baseEnv()
	delete(env, "HANDLER")
	m := newMain(&bytes.Buffer{}, &bytes.Buffer{}, env)
	if _, err := m.load(false); err != nil {
		t.Fatalf("without HANDLER, for status: %v", err)
	}
	env["ROUTES_FILE"] = "/nonexistent/routes.yaml"
	if _, err := m.load(false); err != nil {
		t.Fatalf("with an unreadable ROUTES_FILE, for status: %v", err)
	}
	if _, err := m.load(true); err == nil || !strings.Contains(err.Error(), "ROUTES_FILE") {
		t.Fatalf("for run: %v, want ROUTES_FILE refused", err)
	}
	delete(env, "ROUTES_FILE")
	if _, err := m.load(true); err == nil || !strings.Contains(err.Error(), "HANDLER or ROUTES_FILE is required") {
		t.Fatalf("for run: %v, want HANDLER required", err)
	}
}

func TestConfig_WebhookSecretNeverEchoed(t *testing.T) {
	env := baseEnv()
	env["HANDLER"] = "https://example.com/hook"
	env["WEBHOOK_SECRET"] = "whsec_!!not-base64-TOPSECRET"
	_, err := load(t, env)
	if err == nil || !strings.Contains(err.Error(), "WEBHOOK_SECRET") || strings.Contains(err.Error(), "TOPSECRET") {
		t.Fatalf("err=%v: want WEBHOOK_SECRET named and the secret not shown", err)
	}
}

func TestHelp_ListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	m := newMain(&out, &bytes.Buffer{}, map[string]string{})
	if err := m.Run(context.Background(), []string{"--help"}); err == nil || !strings.Contains(err.Error(), "help") {
		t.Fatalf("--help: %v", err)
	}
	var names []string
	collect(reflect.TypeOf(Config{}), &names)
	collect(reflect.TypeOf(config.Common{}), &names)
	collect(reflect.TypeOf(tracing.Env{}), &names)
	for _, n := range names {
		if !strings.Contains(out.String(), n) {
			t.Errorf("--help does not list %s", n)
		}
	}
	for _, s := range []string{"1s,5s,15s,30s,60s", "public.jetstream_inbox_events", "30s", "sink dlq replay"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help lacks %q", s)
		}
	}
}

func collect(t reflect.Type, out *[]string) {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("env"), ","); name != "" {
			*out = append(*out, name)
		}
	}
}

// The soft memory limit follows MAX_HELD_BYTES, with a floor that leaves
// the runtime room at the smallest setting.
func TestSoftMemoryLimit(t *testing.T) {
	for _, tt := range []struct {
		held int
		want int64
	}{{32 << 20, 192 << 20}, {1 << 30, 6 << 30}, {64 << 10, 64 << 20}, {8 << 20, 64 << 20}, {16 << 20, 96 << 20}} {
		if got := softMemoryLimit(tt.held); got != tt.want {
			t.Errorf("softMemoryLimit(%d) = %d, want %d", tt.held, got, tt.want)
		}
	}
}
