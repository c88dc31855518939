package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// writer commits one outbox row at a time until stopped, as an
// application does while the relay loses its slot.
type writer struct {
	stop chan struct{}
	once sync.Once
	done sync.WaitGroup
	n    atomic.Int64
}

func (w *world) startWriter(every time.Duration) *writer {
	wr := &writer{stop: make(chan struct{})}
	wr.done.Add(1)
	go func() {
		defer wr.done.Done()
		for {
			select {
			case <-wr.stop:
				return
			case <-time.After(every):
			}
			if _, err := w.pool.Exec(context.Background(), "INSERT INTO "+table+
				" (resource_type, event_type, payload) VALUES ('w', 'write', jsonb_build_object('n', $1::int))", wr.n.Load()); err == nil {
				wr.n.Add(1)
			}
		}
	}()
	w.t.Cleanup(wr.halt)
	return wr
}

// halt stops the writer and waits for its last commit.
func (wr *writer) halt() { wr.once.Do(func() { close(wr.stop) }); wr.done.Wait() }

// waitWritten waits until the writer committed n more rows.
func (wr *writer) waitWritten(tb testing.TB, n int64) {
	tb.Helper()
	want := wr.n.Load() + n
	testutil.Eventually(tb, 30*time.Second, func() error {
		if got := wr.n.Load(); got < want {
			return fmt.Errorf("writer at %d rows, want %d", got, want)
		}
		return nil
	})
}

// waitAllStreamed waits until every outbox row's event id is in the stream
// (lost 0), and fails if one is stored twice.
func (w *world) waitAllStreamed(timeout time.Duration) {
	w.t.Helper()
	var ids []string
	testutil.Eventually(w.t, timeout, func() error {
		rows, err := w.pool.Query(context.Background(), "SELECT event_id::text FROM "+table+" ORDER BY id")
		if err != nil {
			return err
		}
		ids = ids[:0]
		for rows.Next() {
			var id string
			rows.Scan(&id) //nolint:errcheck // checked by rows.Err
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		seen := map[string]int{}
		for _, m := range w.messages(subject) {
			seen[m.Header.Get(envelope.HeaderMsgID)]++
		}
		missing := 0
		for _, id := range ids {
			if seen[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d outbox rows not in the stream", missing, len(ids))
		}
		for id, n := range seen {
			if n > 1 {
				return fmt.Errorf("event %s stored %d times", id, n)
			}
		}
		return nil
	})
}

// records returns the slot record's events, oldest first, as
// "event/reason".
func (w *world) records() []string {
	w.t.Helper()
	rows, err := w.pool.Query(context.Background(), "SELECT event || '/' || coalesce(reason, '') FROM public.jetstream_bridge_slots WHERE slot_name = $1 ORDER BY id", w.opts.Slot)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// dropSlot ends the walsender holding the slot and drops it, again until
// the drop wins the race with the relay's reconnect.
func (w *world) dropSlot() {
	w.t.Helper()
	testutil.Eventually(w.t, 30*time.Second, func() error {
		ctx := context.Background()
		w.pool.Exec(ctx, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL", w.opts.Slot) //nolint:errcheck // the drop decides
		_, err := w.pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", w.opts.Slot)
		return err
	})
}

// TestRelayRecoversDroppedSlot: the slot is dropped under a running relay
// while an application keeps writing. The relay recreates it, republishes
// from the stream's newest event (a margin of 1ms: the marker alone decides)
// and streams on: every outbox row is in the stream once, the recovery is
// recorded and counted.
func TestRelayRecoversDroppedSlot(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.opts.RecoverSlot, w.opts.RecoveryMargin = true, time.Millisecond
	w.run()
	wr := w.startWriter(5 * time.Millisecond)
	wr.waitWritten(t, 20)
	w.dropSlot()
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := w.obs.recoveries.Load(); n != 1 {
			return fmt.Errorf("recoveries=%d, want 1", n)
		}
		return nil
	})
	wr.waitWritten(t, 20)
	wr.halt()
	w.waitAllStreamed(60 * time.Second)
	if got := w.records(); !slices.Equal(got, []string{"created/", "recovering/dropped", "recovered/dropped"}) {
		t.Errorf("slot records %v, want [created/ recovering/dropped recovered/dropped]", got)
	}
	w.positionsAscend()
}

// positionsAscend fails unless every message on the relay's subject has a
// source position and the positions rise in stream order: republished rows
// too, so that sinks ordering by position (SKIP_STALE) order them among
// themselves and before the events the new slot streams.
func (w *world) positionsAscend() {
	w.t.Helper()
	var prev envelope.Position
	for i, m := range w.messages(subject) {
		p, ok := envelope.ParsePosition(m.Header)
		if !ok {
			w.t.Fatalf("message %d of %d (stream seq %d, event %s) has no position", i+1, len(w.messages(subject)), m.Sequence, m.Header.Get(envelope.HeaderMsgID))
		}
		if i > 0 && (p.CommitLSN < prev.CommitLSN || p.CommitLSN == prev.CommitLSN && p.TxIndex <= prev.TxIndex) {
			w.t.Fatalf("stream seq %d has position %s/%d, not after the previous message's %s/%d", m.Sequence, p.CommitLSN, p.TxIndex, prev.CommitLSN, prev.TxIndex)
		}
		prev = p
	}
}

// TestRelayRecoversLostSlot: the relay is down while writers go on and
// max_slot_wal_keep_size invalidates the slot (wal_status = lost). Started
// again, the relay drops it, creates it anew and republishes what the
// stream lacks: lost 0, recorded, counted, and it streams on.
func TestRelayRecoversLostSlot(t *testing.T) {
	t.Parallel()
	pg := testutil.StartPostgres(t)
	ctx := context.Background()
	if err := pg.CreateDatabase(ctx, "lost"); err != nil {
		t.Fatal(err)
	}
	w := newWorldAt(t, pg.URL("lost"))
	w.opts.RecoverSlot, w.opts.RecoveryMargin = true, time.Millisecond
	stop := w.run()
	w.insert(`(resource_type, event_type) VALUES ('a', 'before')`)
	w.waitMessages(subject, 1, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'", "SELECT pg_reload_conf()"} {
		if _, err := w.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		w.insert(`(resource_type, event_type) VALUES ('a', 'while down')`)
		for _, q := range []string{"SELECT pg_switch_wal()", "CHECKPOINT"} {
			if _, err := w.pool.Exec(ctx, q); err != nil {
				return err
			}
		}
		var status string
		if err := w.pool.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", w.opts.Slot).Scan(&status); err != nil {
			return err
		}
		if status != "lost" {
			return fmt.Errorf("wal_status %s", status)
		}
		return nil
	})
	w.insert(`(resource_type, event_type) VALUES ('a', 'after lost')`)
	w.run()
	w.insert(`(resource_type, event_type) VALUES ('a', 'streamed')`)
	w.waitAllStreamed(60 * time.Second)
	if n := w.obs.recoveries.Load(); n != 1 {
		t.Errorf("recoveries=%d, want 1", n)
	}
	if n := w.obs.recoveredRows.Load(); n < 2 {
		t.Errorf("rows republished=%d, want the rows written while the slot was lost", n)
	}
	if got := w.records(); !slices.Equal(got, []string{"created/", "recovering/lost", "recovered/lost"}) {
		t.Errorf("slot records %v, want [created/ recovering/lost recovered/lost]", got)
	}
	info, err := cdc.ReadSlot(ctx, w.pool, w.opts.Slot)
	if err != nil || info == nil || info.WALStatus == "lost" {
		t.Errorf("slot after recovery: %+v, %v", info, err)
	}
}

// TestRelayFirstStartDoesNotBackfill: on a fresh database the slot has no
// record; the relay's provisioning creates it and nothing is republished:
// a row committed before the slot existed stays unpublished.
func TestRelayFirstStartDoesNotBackfill(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", w.opts.Slot); err != nil {
		t.Fatal(err)
	}
	w.insert(`(resource_type, event_type) VALUES ('a', 'before the slot')`)
	w.opts.RecoverSlot = true
	w.opts.Provision = func(ctx context.Context) error {
		_, err := provision.CreateSlot(ctx, w.opts.ConnString, w.opts.Slot)
		return err
	}
	w.run()
	w.insert(`(resource_type, event_type) VALUES ('a', 'after')`)
	got := w.waitMessages(subject, 1, 30*time.Second)
	if et := eventType(t, got[0]); et != "after" {
		t.Errorf("published %q, want only the row after the slot", et)
	}
	if n := w.obs.recoveries.Load(); n != 0 {
		t.Errorf("recoveries=%d on a first start, want 0", n)
	}
	if got := w.records(); len(got) != 1 || got[0] != "created/" {
		t.Errorf("slot records %v, want [created/]", got)
	}
}

// TestRelayManualSlotRecoveryStops: with recovery off (SLOT_RECOVERY=manual)
// a slot dropped under the running relay stops it with the missing-slot
// error, as before.
func TestRelayManualSlotRecoveryStops(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	r := relay.New(w.opts)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- r.Run(ctx) }()
	testutil.Eventually(t, 30*time.Second, func() error {
		if !r.State().Replicating {
			return errors.New("not replicating yet")
		}
		return nil
	})
	w.dropSlot()
	select {
	case err := <-done:
		if !errors.Is(err, cdc.ErrSlotMissing) {
			t.Fatalf("Run returned %v, want the missing-slot error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("relay still running 30s after its slot was dropped")
	}
	if n := w.obs.recoveries.Load(); n != 0 {
		t.Errorf("recoveries=%d with recovery off", n)
	}
}

// TestRelayRedoesInterruptedRecovery: a relay died in the middle of a
// recovery, after it created the slot and before its backfill was done
// (the last record is "recovering"). The next start must not take that
// slot for a healthy one: it recovers again, and the rows committed while
// the slot was gone reach the stream.
func TestRelayRedoesInterruptedRecovery(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	w.opts.RecoverSlot, w.opts.RecoveryMargin = true, time.Millisecond
	stop := w.run()
	w.insert(`(resource_type, event_type) VALUES ('a', 'before')`)
	w.waitMessages(subject, 1, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The interrupted recovery: slot gone, rows committed, a new slot
	// created with nothing republished, the record left at "recovering".
	w.dropSlot()
	w.insert(`(resource_type, event_type) VALUES ('a', 'gap 1')`, `(resource_type, event_type) VALUES ('a', 'gap 2')`)
	if _, err := provision.CreateSlot(ctx, w.opts.ConnString, w.opts.Slot); err != nil {
		t.Fatal(err)
	}
	if _, err := w.pool.Exec(ctx, `INSERT INTO public.jetstream_bridge_slots (slot_name, event, reason) VALUES ($1, 'recovering', 'missing')`, w.opts.Slot); err != nil {
		t.Fatal(err)
	}
	w.run()
	w.insert(`(resource_type, event_type) VALUES ('a', 'after')`)
	w.waitAllStreamed(60 * time.Second)
	if got := w.records(); !slices.Equal(got, []string{"created/", "recovering/missing", "recovering/missing", "recovered/missing"}) {
		t.Errorf("slot records %v, want [created/ recovering/missing recovering/missing recovered/missing]", got)
	}
}

// TestRelayPairRecoversOnce: an active relay and its hot standby both find
// the slot dropped. One creates it and backfills; the other finds it there
// and waits as standby: one recovery, one record, every row in the stream
// once.
func TestRelayPairRecoversOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.opts.RecoverSlot, w.opts.RecoveryMargin = true, time.Millisecond
	w.run()
	standby := relay.New(w.opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- standby.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("standby relay: %v", err)
		}
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		if !standby.State().Standby {
			return errors.New("second relay not waiting as standby yet")
		}
		return nil
	})
	wr := w.startWriter(5 * time.Millisecond)
	wr.waitWritten(t, 20)
	w.dropSlot()
	wr.waitWritten(t, 40)
	wr.halt()
	w.waitAllStreamed(60 * time.Second)
	testutil.Eventually(t, 30*time.Second, func() error { // the record and the count follow the last ack
		if n := w.obs.recoveries.Load(); n != 1 {
			return fmt.Errorf("recoveries=%d across the pair, want 1", n)
		}
		return nil
	})
	if got := w.records(); !slices.Equal(got, []string{"created/", "recovering/dropped", "recovered/dropped"}) &&
		!slices.Equal(got, []string{"created/", "recovering/missing", "recovered/missing"}) {
		t.Errorf("slot records %v, want one recovery", got)
	}
}
