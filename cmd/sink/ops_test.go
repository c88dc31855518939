package main

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func sample(body, metric string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestBinary_ReadinessFollowsDependenciesAndMetricsMove: /readyz answers 503
// naming the dependency while NATS or Postgres is unreachable and 200 again
// after, reporting the database server in use; applied counts and handler latency move as events flow.
func TestBinary_ReadinessFollowsDependenciesAndMetricsMove(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	u, err := url.Parse(w.db)
	if err != nil {
		t.Fatal(err)
	}
	pgProxy := testutil.StartProxy(t, u.Host)
	natsProxy := testutil.StartProxy(t, strings.TrimPrefix(w.nats, "nats://"))
	db := strings.Replace(w.db, u.Host, pgProxy.Addr, 1)
	addr := testutil.FreeAddr(t)
	w.start(t, "DATABASE_URL="+db, "NATS_URLS=nats://"+natsProxy.Addr, "HTTP_ADDR="+addr)
	w.waitConsumer(t)

	ready := func(want int, mention string) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			code, body := readyz(addr)
			if code != want || (mention != "" && !strings.Contains(body, mention)) {
				return fmt.Errorf("/readyz=%d %s, want %d naming %q", code, body, want, mention)
			}
			return nil
		})
	}
	ready(200, `"db_host":"`+pgProxy.Addr+`"`) // the server the pool reached
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		w.publish(t, ctx, fmt.Sprintf("m-%d", i), fmt.Sprint(i), "0/1", i)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		body := scrape(addr, "/metrics")
		if got := sample(body, `jetstream_bridge_sink_events_total{result="applied"}`); got != 5 {
			return fmt.Errorf("applied=%v, want 5", got)
		}
		if got := sample(body, "jetstream_bridge_sink_handler_seconds_count"); got < 5 {
			return fmt.Errorf("handler observations=%v, want 5", got)
		}
		// Every applied event is timed from its store in the stream and
		// from its arrival; the first includes the second.
		lag, held := sample(body, "jetstream_bridge_sink_lag_seconds_count"), sample(body, "jetstream_bridge_sink_held_seconds_count")
		if lag != 5 || held != 5 {
			return fmt.Errorf("lag observations=%v, held observations=%v, want 5 each", lag, held)
		}
		if l, h := sample(body, "jetstream_bridge_sink_lag_seconds_sum"), sample(body, "jetstream_bridge_sink_held_seconds_sum"); l < h || h <= 0 {
			return fmt.Errorf("lag sum %v, held sum %v: want lag ≥ held > 0", l, h)
		}
		return nil
	})
	// The build is exposed as the version command prints it.
	buildInfo := `(?m)^jetstream_bridge_sink_build_info\{goversion="` + regexp.QuoteMeta(runtime.Version()) +
		`",revision="[^"]+",version="[^"]+"\} 1$`
	if body := scrape(addr, "/metrics"); !regexp.MustCompile(buildInfo).MatchString(body) {
		t.Errorf("/metrics lacks %s", buildInfo)
	}

	natsProxy.Down()
	ready(503, "nats")
	natsProxy.Up()
	ready(200, "")
	pgProxy.Down()
	ready(503, "postgres")
	pgProxy.Up()
	ready(200, "")

	for i := 5; i < 10; i++ {
		w.publish(t, ctx, fmt.Sprintf("m-%d", i), fmt.Sprint(i), "0/1", i)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if total, distinct := w.effects(t); total != 10 || distinct != 10 {
			return fmt.Errorf("effects total=%d distinct=%d, want 10 each", total, distinct)
		}
		return nil
	})
}

func readyz(addr string) (int, string) {
	body := scrape(addr, "/readyz")
	switch {
	case strings.Contains(body, `"status":"ready"`):
		return 200, body
	case strings.Contains(body, `"status":"unready"`):
		return 503, body
	}
	return 0, body
}

// TestBinary_StatusWatchRefreshes: `sink status --watch` redraws until
// interrupted, then exits 0.
func TestBinary_StatusWatchRefreshes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if out, err := w.runCmd(t, []string{"provision"}); err != nil {
		t.Fatalf("provision: %v\n%s", err, out)
	}
	p := testutil.StartProcess(t, w.bin, w.env("HANDLER="), "status", "--watch=100ms")
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := strings.Count(p.Output(), "\033[H\033[2J"); n < 3 {
			return fmt.Errorf("%d refreshes so far:\n%s", n, p.Output())
		}
		return nil
	})
	p.Signal(syscall.SIGINT)
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("status --watch did not exit 0 on SIGINT: %v", err)
	}
}
