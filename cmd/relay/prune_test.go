package main_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// insertOld inserts n rows that occurred two hours ago (older than a 1h
// retention) in one transaction.
func (h *harness) insertOld(n int) {
	h.t.Helper()
	if _, err := h.pool.Exec(context.Background(), `INSERT INTO jetstream_outbox_events (resource_type, event_type, payload, occurred_at)
		SELECT 'old', 'created', '{}', now() - interval '2 hours' FROM generate_series(1, $1::int)`, n); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) oldRows() int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(), "SELECT count(*) FROM jetstream_outbox_events WHERE resource_type = 'old'").Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// waitPruneTicks waits until out() holds at least n lines containing line
// after offset, or until the old rows are fewer than want (then the caller's
// check reports it).
func (h *harness) waitPruneTicks(p *testutil.Process, offset int, line string, n, want int) {
	h.t.Helper()
	testutil.Eventually(h.t, 60*time.Second, func() error {
		if h.oldRows() < want {
			return nil
		}
		if got := strings.Count(p.Output()[offset:], line); got < n {
			return fmt.Errorf("%d %q lines, want %d:\n%s", got, line, n, testutil.Tail(p.Output(), 5))
		}
		return nil
	})
}

// TestStandbyDoesNotPrune: a standby relay with OUTBOX_RETENTION deletes
// nothing (it knows nothing of the slot's progress); once it takes over
// the slot it prunes the published rows.
func TestStandbyDoesNotPrune(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	a := h.start()
	waitReplicating(t, a)
	h.insertOld(50)
	h.waitCount(subjAB, 50, 30*time.Second, a)
	b := h.start("OUTBOX_RETENTION=1h", "OUTBOX_PRUNE_INTERVAL=1s", "LOG_LEVEL=debug")
	h.waitPruneTicks(b, 0, "this relay does not hold the slot", 3, 50)
	if n := h.oldRows(); n != 50 {
		t.Fatalf("the standby pruned: %d of 50 published old rows left", n)
	}
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := h.oldRows(); n != 0 {
			return fmt.Errorf("%d old rows left after the standby took over:\n%s", n, testutil.Tail(b.Output(), 5))
		}
		return nil
	})
}

// TestPruneWaitsForConfirmation: rows older than OUTBOX_RETENTION whose
// events the slot has not confirmed (the relay's NATS is unreachable) are
// kept; once they are published and confirmed they are pruned.
func TestPruneWaitsForConfirmation(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	proxy := testutil.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", ns.Port()))
	h := newHarness(t, testutil.NewDatabase(t), ns.URL())
	p := h.start("NATS_URLS=nats://"+proxy.Addr, "OUTBOX_RETENTION=1h", "OUTBOX_PRUNE_INTERVAL=1s", "LOG_LEVEL=debug")
	waitReplicating(t, p)
	proxy.Down()
	h.insertOld(20)
	recent, err := h.insertTx(context.Background(), 5, false)
	if err != nil {
		t.Fatal(err)
	}
	h.waitPruneTicks(p, len(p.Output()), "outbox prune waits for the slot to confirm", 3, 20)
	if n := h.oldRows(); n != 20 {
		t.Fatalf("rows pruned before they were published: %d of 20 old rows left", n)
	}
	proxy.Up()
	h.waitCount(subjAB, 25, 60*time.Second, p)
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := h.oldRows(); n != 0 {
			return fmt.Errorf("%d old rows left after they were published:\n%s", n, testutil.Tail(p.Output(), 5))
		}
		return nil
	})
	if got, want := len(h.committedIDs()), len(recent); got != want {
		t.Fatalf("%d rows left, want the %d recent ones", got, want)
	}
}
