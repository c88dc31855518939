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
	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestAudit_SinkCountsAppliedDeadStaleAndGaps drives the sink binary over
// 25 events: applied ones (one sent as a gem publisher does, with a
// lowercase nats-msg-id, one named only by its body), a poison message whose id names its event (dead),
// an event older than one applied for its key (stale, SKIP_STALE=true);
// then, with the sink stopped, one more event is stored and not applied.
// `sink audit --page 7` must count each once and exit 3 for the gap.
func TestAudit_SinkCountsAppliedDeadStaleAndGaps(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := w.start(t, "SKIP_STALE=true", "MAX_DELIVER=1")
	w.waitConsumer(t)
	var applied []string
	for i := range 20 {
		id := fmt.Sprintf("ev-%02d", i)
		applied = append(applied, id)
		w.publish(t, ctx, id, fmt.Sprint(i), fmt.Sprintf("0/%X", 0x1000+i), 0)
	}
	// As the gem publishes: the id in a lowercase header.
	gem := nats.NewMsg("billing.sync.orders")
	gem.Data = []byte(`{"event_id":"gem-1","schema_version":1,"event_type":"user.updated","producer":"billing","resource_type":"user","resource_id":"gem","occurred_at":"2026-01-02T03:04:05Z","payload":{}}`)
	gem.Header["nats-msg-id"] = []string{"gem-1"}
	if _, err := w.js.PublishMsg(ctx, gem); err != nil {
		t.Fatal(err)
	}
	applied = append(applied, "gem-1")
	// No id header at all: only the body names the event.
	bare := nats.NewMsg("billing.sync.orders")
	bare.Data = []byte(strings.ReplaceAll(string(gem.Data), "gem", "bare"))
	if _, err := w.js.PublishMsg(ctx, bare); err != nil {
		t.Fatal(err)
	}
	applied = append(applied, "bare-1")
	poison := nats.NewMsg("billing.sync.orders")
	poison.Data = []byte(`{not json`)
	poison.Header.Set("Nats-Msg-Id", "poison-1")
	if _, err := w.js.PublishMsg(ctx, poison); err != nil {
		t.Fatal(err)
	}
	// Key "3" was applied at 0/1003; this one is older.
	w.publish(t, ctx, "old-3", "3", "0/1", 0)

	testutil.Eventually(t, 60*time.Second, func() error {
		var n int
		if err := w.conn.QueryRow(ctx, `SELECT count(*) FROM jetstream_inbox_events WHERE status IN ('processed', 'dead', 'stale')`).Scan(&n); err != nil {
			return err
		}
		if n != 24 {
			return fmt.Errorf("%d inbox rows settled, want 24", n)
		}
		return nil
	})
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(30 * time.Second); err != nil {
		t.Fatalf("sink did not stop: %v\n%s", err, p.Output())
	}

	// The sink is down: this one stays in the stream.
	w.publish(t, ctx, "late-1", "late", "0/9000", 0)

	res := testutil.RunCommand(t, 60*time.Second, w.bin, w.env(), "audit", "--since", "1h", "--settle", "0s", "--page", "7", "--json")
	if res.Code != cli.ExitGap {
		t.Fatalf("sink audit: exit %d, want %d\n%s\n%s", res.Code, cli.ExitGap, res.Stdout, res.Stderr)
	}
	var rep audit.SinkReport
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		t.Fatalf("not a report: %v\n%s", err, res.Stdout)
	}
	if rep.Messages != 25 || rep.Events != 25 || rep.Applied != 22 || rep.Dead != 1 || rep.Stale != 1 || rep.NotApplied != 1 {
		t.Fatalf("report: %+v", rep)
	}
	if rep.NotAppliedIDs[0] != "late-1" || rep.DeadIDs[0] != "poison-1" || rep.StaleIDs[0] != "old-3" {
		t.Fatalf("examples: %+v", rep)
	}

	// Applied by a sink again: no gap, and the table says so.
	p = w.start(t, "SKIP_STALE=true", "MAX_DELIVER=1")
	testutil.Eventually(t, 60*time.Second, func() error {
		res = testutil.RunCommand(t, 60*time.Second, w.bin, w.env(), "audit", "--since", "1h", "--settle", "0s")
		if res.Code != cli.ExitOK {
			return fmt.Errorf("exit %d: %s", res.Code, res.Stdout)
		}
		return nil
	})
	if !strings.Contains(res.Stdout, "no gap") || !strings.Contains(res.Stdout, "dead") {
		t.Fatalf("table:\n%s", res.Stdout)
	}
	_ = p
}
