package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	natsErr := errors.New("nats RECONNECTING")
	s := &ops.Server{Registry: ops.NewRegistry(), Checks: map[string]ops.Check{
		"postgres": func(context.Context) error { return nil },
		"nats":     func(context.Context) error { return natsErr },
	}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	if code, _ := get(t, srv, "/healthz"); code != 200 {
		t.Fatalf("/healthz=%d", code)
	}
	code, body := get(t, srv, "/readyz")
	var r struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if code != 503 || r.Status != "unready" || r.Checks["nats"] != natsErr.Error() || r.Checks["postgres"] != "ok" {
		t.Fatalf("/readyz=%d %s", code, body)
	}
	natsErr = nil
	if code, _ := get(t, srv, "/readyz"); code != 200 {
		t.Fatalf("/readyz=%d once every check passes", code)
	}
	if code, body := get(t, srv, "/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics=%d", code)
	}
}
