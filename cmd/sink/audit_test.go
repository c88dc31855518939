package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// runAudit runs `sink audit --json` to its end and returns the report, the
// exit status and the output.
func (w *world) runAudit(t *testing.T, args ...string) (*audit.SinkReport, int, string) {
	t.Helper()
	p := testutil.StartProcess(t, w.bin, w.env(), append([]string{"audit", "--json"}, args...)...)
	_ = p.Wait(2 * time.Minute)
	out := p.Output()
	start := strings.Index(out, "{")
	if start < 0 {
		t.Fatalf("sink audit printed no report (exit %d):\n%s", p.ExitCode(), out)
	}
	var rep audit.SinkReport
	if err := json.NewDecoder(strings.NewReader(out[start:])).Decode(&rep); err != nil {
		t.Fatalf("sink audit report: %v\n%s", err, out)
	}
	return &rep, p.ExitCode(), out
}

// The sink audit classifies every message on the sink's subject, read in
// pages of 7: applied, dead (a poison message), stale (SKIP_STALE) — no
// gap, exit 0 — and, once the sink is stopped, a message nobody applied:
// a gap, exit 3, named by its event id.
func TestAuditSinkFindsNotAppliedDeadStale(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	p := w.start(t, "SKIP_STALE=true")
	w.waitConsumer(t)
	for i := range 50 {
		w.publish(t, ctx, fmt.Sprintf("00000000-0000-4000-8000-%012d", i), fmt.Sprint(i), fmt.Sprintf("0/%X", 0x1000+i*16), 0)
	}
	// Key "k": the newer event first, then an older one, which is stale.
	w.publish(t, ctx, "00000000-0000-4000-8000-100000000001", "k", "0/9000", 0)
	w.publish(t, ctx, "00000000-0000-4000-8000-100000000002", "k", "0/8000", 0)
	staleID := "00000000-0000-4000-8000-100000000002"
	// A poison message: dead-lettered at once.
	poisonID := "00000000-0000-4000-8000-200000000001"
	if _, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: "billing.sync.orders", Data: []byte("not json"),
		Header: nats.Header{"Nats-Msg-Id": []string{poisonID}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		info := w.consumerInfo(t)
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("consumer: %d pending, %d awaiting ack", info.NumPending, info.NumAckPending)
		}
		return nil
	})

	rep, code, out := w.runAudit(t, "--since", "all", "--page", "7", "--settle", "0")
	if code != 0 {
		t.Fatalf("audit exit %d, want 0:\n%s", code, out)
	}
	if rep.Messages != 53 || rep.Events != 53 || rep.Counts[audit.Applied] != 51 || rep.Counts[audit.Dead] != 1 ||
		rep.Counts[audit.Stale] != 1 || rep.Counts[audit.NotApplied] != 0 {
		t.Fatalf("audit: %+v", rep)
	}
	if ex := rep.Examples[audit.Dead]; len(ex) != 1 || ex[0].EventID != poisonID {
		t.Fatalf("dead examples %+v, want %s", ex, poisonID)
	}
	if ex := rep.Examples[audit.Stale]; len(ex) != 1 || ex[0].EventID != staleID || ex[0].Status != "stale" {
		t.Fatalf("stale examples %+v, want %s", ex, staleID)
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(time.Minute); err != nil {
		t.Fatalf("sink did not stop: %v", err)
	}
	notApplied := "00000000-0000-4000-8000-300000000001"
	w.publish(t, ctx, notApplied, "x", "0/A000", 0)
	rep, code, out = w.runAudit(t, "--since", "10m", "--settle", "200ms")
	if code != 3 {
		t.Fatalf("audit with an unapplied message: exit %d, want 3:\n%s", code, out)
	}
	if !strings.Contains(out, "audit found a gap: 1 events not applied") {
		t.Fatalf("no gap verdict:\n%s", out)
	}
	if !rep.Rechecked || rep.Counts[audit.NotApplied] != 1 || rep.Counts[audit.Applied] != 51 {
		t.Fatalf("audit: %+v", rep)
	}
	if ex := rep.Examples[audit.NotApplied]; len(ex) != 1 || ex[0].EventID != notApplied || ex[0].Status != "" {
		t.Fatalf("not applied examples %+v, want %s without an inbox row", ex, notApplied)
	}
	// --strict: dead and stale events are findings too.
	_, code, out = w.runAudit(t, "--since", "all", "--settle", "0", "--strict")
	if code != 3 || !strings.Contains(out, "1 events dead, 1 events stale") {
		t.Fatalf("strict audit exit %d:\n%s", code, out)
	}
}
