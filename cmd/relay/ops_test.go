package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// metric reads one unlabelled sample from /metrics.
func metric(t *testing.T, addr, name string) float64 {
	t.Helper()
	_, body := httpStatus("http://" + addr + "/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestReadinessFollowsDependencies: /readyz is 200 while replicating and
// connected, reporting the database server in use, 503 while NATS or
// Postgres is down, 200 again after.
func TestReadinessFollowsDependencies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, db := privatePostgres(t)
	n := testutil.StartNATS(t)
	h := newHarness(t, db, n.URL())
	addr := testutil.FreeAddr(t)
	p := h.start("HTTP_ADDR=" + addr)
	waitReplicating(t, p)
	ready := func(want int) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			if code, body := httpStatus("http://" + addr + "/readyz"); code != want {
				return fmt.Errorf("/readyz=%d %s, want %d", code, body, want)
			}
			return nil
		})
	}
	ready(200)
	// The database server in use: the replication connection's.
	if _, body := httpStatus("http://" + addr + "/readyz"); !strings.Contains(body, fmt.Sprintf(`"db_host":"127.0.0.1:%d"`, pg.Port())) {
		t.Errorf("/readyz does not report db_host 127.0.0.1:%d: %s", pg.Port(), body)
	}
	if code, _ := httpStatus("http://" + addr + "/healthz"); code != 200 {
		t.Fatalf("/healthz=%d", code)
	}
	n.Shutdown()
	ready(503)
	if _, body := httpStatus("http://" + addr + "/readyz"); !strings.Contains(body, "nats") {
		t.Fatalf("unready body does not name nats: %s", body)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	ready(200)
	if err := pg.Stop("fast"); err != nil {
		t.Fatal(err)
	}
	ready(503)
	if _, body := httpStatus("http://" + addr + "/readyz"); !strings.Contains(body, "replication") {
		t.Fatalf("unready body does not name replication: %s", body)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ready(200)
	// And it still relays after both outages.
	if _, err := h.insertTx(ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 3, 30*time.Second, p)
}

// TestMetricsMoveAndStatusReports: published count, latency and confirmed
// LSN move as events flow; `relay status --json` reports slot and stream.
func TestMetricsMoveAndStatusReports(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	addr := testutil.FreeAddr(t)
	p := h.start("HTTP_ADDR=" + addr)
	waitReplicating(t, p)
	if got := metric(t, addr, "jetstream_bridge_relay_events_published_total"); got != 0 {
		t.Fatalf("published=%v before any event", got)
	}
	lsn0 := metric(t, addr, "jetstream_bridge_relay_confirmed_lsn")
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := h.insertTx(ctx, 5, false); err != nil {
			t.Fatal(err)
		}
	}
	h.waitCount(subjAB, 50, 20*time.Second, p)
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := metric(t, addr, "jetstream_bridge_relay_events_published_total"); got != 50 {
			return fmt.Errorf("published=%v, want 50", got)
		}
		if got := metric(t, addr, "jetstream_bridge_relay_commit_to_ack_seconds_count"); got != 50 {
			return fmt.Errorf("latency observations=%v, want 50", got)
		}
		if got := metric(t, addr, "jetstream_bridge_relay_confirmed_lsn"); got <= lsn0 {
			return fmt.Errorf("confirmed lsn %v did not move from %v", got, lsn0)
		}
		if got := metric(t, addr, "jetstream_bridge_relay_replicating"); got != 1 {
			return fmt.Errorf("replicating=%v", got)
		}
		return nil
	})
	// The build is exposed as the version command prints it.
	_, body := httpStatus("http://" + addr + "/metrics")
	buildInfo := `(?m)^jetstream_bridge_relay_build_info\{goversion="` + regexp.QuoteMeta(runtime.Version()) +
		`",revision="[^"]+",version="[^"]+"\} 1$`
	if !regexp.MustCompile(buildInfo).MatchString(body) {
		t.Errorf("/metrics lacks %s", buildInfo)
	}

	s := testutil.StartProcess(t, h.bin, h.env, "status", "--json")
	if err := s.Wait(30 * time.Second); err != nil {
		t.Fatalf("relay status: %v\n%s", err, s.Output())
	}
	var st struct {
		Slot struct {
			Active    bool   `json:"active"`
			ActivePID int    `json:"active_pid"`
			WALStatus string `json:"wal_status"`
		} `json:"slot"`
		ConfirmedLSN string `json:"confirmed_lsn"`
		Publication  bool   `json:"publication_exists"`
		Stream       struct {
			Messages uint64 `json:"messages"`
		} `json:"stream"`
	}
	out := s.Output()
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, out)
	}
	if !st.Slot.Active || st.Slot.ActivePID == 0 || st.Slot.WALStatus != "reserved" || !st.Publication ||
		st.Stream.Messages != 50 || !strings.Contains(st.ConfirmedLSN, "/") {
		t.Fatalf("status = %+v", st)
	}
	txt := testutil.StartProcess(t, h.bin, h.env, "status")
	if err := txt.Wait(30 * time.Second); err != nil {
		t.Fatalf("relay status: %v\n%s", err, txt.Output())
	}
	for _, want := range []string{"slot:", "confirmed lsn:", "lag:", "wal retained:", "50 messages"} {
		if !strings.Contains(txt.Output(), want) {
			t.Errorf("status output lacks %q:\n%s", want, txt.Output())
		}
	}
}

// TestStatusWatchRefreshes: `relay status --watch` redraws until interrupted,
// then exits 0.
func TestStatusWatchRefreshes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	h.provision()
	w := testutil.StartProcess(t, h.bin, h.env, "status", "--watch=100ms")
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := strings.Count(w.Output(), "relay status at"); n < 3 {
			return fmt.Errorf("%d refreshes so far", n)
		}
		return nil
	})
	w.Signal(syscall.SIGINT)
	if err := w.Wait(10 * time.Second); err != nil {
		t.Fatalf("status --watch did not exit 0 on SIGINT: %v", err)
	}
}

// TestReadCoalescingKeepsEveryEvent: with a linger long enough that a single
// writer's stream of small transactions counts as busy, reads wait for bursts
// (the counter moves) and the stream still holds every committed event once,
// in commit order, while a rolled-back transaction never shows.
func TestReadCoalescingKeepsEveryEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	addr := testutil.FreeAddr(t)
	// 20ms: two transactions per 20ms (100/s) make the stream busy.
	p := h.start("HTTP_ADDR="+addr, "BATCH_LINGER=20ms")
	waitReplicating(t, p)
	ctx := context.Background()
	var txs [][]string
	var rolledBack []string
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; len(txs) < 2000 || metric(t, addr, "jetstream_bridge_relay_read_lingers_total") < 1; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d transactions the relay never waited for a burst (lingers %v)",
				len(txs), metric(t, addr, "jetstream_bridge_relay_read_lingers_total"))
		}
		rollback := i%500 == 250
		ids, err := h.insertTx(ctx, 1+i%3, rollback)
		if err != nil {
			t.Fatal(err)
		}
		if rollback {
			rolledBack = append(rolledBack, ids...)
			continue
		}
		txs = append(txs, ids)
	}
	var committed []string
	for _, tx := range txs {
		committed = append(committed, tx...)
	}
	h.waitCount(subjAB, len(committed), 60*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, txs, rolledBack, true)
	if got := metric(t, addr, "jetstream_bridge_relay_read_lingers_total"); got < 1 {
		t.Fatalf("read_lingers_total = %v", got)
	}
}
