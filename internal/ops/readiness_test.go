package ops_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
)

// TestReadinessGauge: /metrics reports each /readyz check as
// jetstream_bridge_ready{check}, evaluated at scrape time.
func TestReadinessGauge(t *testing.T) {
	var natsErr error = errors.New("nats RECONNECTING")
	s := &ops.Server{Registry: ops.NewRegistry(), Checks: map[string]ops.Check{
		"postgres": func(context.Context) error { return nil },
		"nats":     func(context.Context) error { return natsErr },
	}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	want := func(samples ...string) {
		t.Helper()
		_, body := get(t, srv, "/metrics")
		for _, s := range samples {
			if !strings.Contains(body, "\n"+s+"\n") {
				t.Fatalf("/metrics lacks %q:\n%s", s, body)
			}
		}
	}
	want(`jetstream_bridge_ready{check="nats"} 0`, `jetstream_bridge_ready{check="postgres"} 1`, "# TYPE go_goroutines gauge")
	natsErr = nil
	want(`jetstream_bridge_ready{check="nats"} 1`)
}
