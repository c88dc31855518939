package sink_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestSink_BatchesKeepEveryEventsGuarantees applies a backlog through a SQL
// handler, so that workers apply several events per transaction, with
// duplicates, refusals, failing attempts and stale events mixed in: every
// healthy event is applied once, in its key's order, in far fewer
// transactions than events, and each of the others ends as it would alone.
func TestSink_BatchesKeepEveryEventsGuarantees(t *testing.T) {
	e := newEnv(t)
	e.exec(t,
		`CREATE TABLE gate (open boolean NOT NULL)`,
		`INSERT INTO gate VALUES (false)`,
		`CREATE PROCEDURE public.apply(e jsonb) LANGUAGE plpgsql AS $$
		 BEGIN
		   IF e->'payload'->>'mode' = 'refuse' THEN
		     RAISE EXCEPTION 'refused %', e->>'event_id' USING ERRCODE = 'JBDLQ';
		   END IF;
		   IF e->'payload'->>'mode' = 'gated' AND NOT (SELECT open FROM gate) THEN
		     RAISE EXCEPTION 'gate closed';
		   END IF;
		   INSERT INTO effects (event_id, note)
		     VALUES (e->>'event_id', txid_current()::text || '/' || current_setting('jetstream_bridge.applying', true));
		 END $$`,
	)
	h, err := sink.NewSQLHandler(context.Background(), e.pool, "public.apply")
	if err != nil {
		t.Fatal(err)
	}
	ev := func(id, key, mode, lsn string) envelope.Message {
		m, err := e.builder.Build(&envelope.Row{
			EventID: id, ResourceType: "user", ResourceID: key, EventType: "user.updated",
			Payload: []byte(fmt.Sprintf(`{"mode":%q}`, mode)), Headers: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05+00",
		}, pos(lsn, 0))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Everything is in the stream before the sink starts: batches form.
	const keys, perKey = 50, 4
	var healthy []string
	for k := range perKey {
		for key := range keys {
			id := fmt.Sprintf("p-%02d-%d", key, k)
			healthy = append(healthy, id)
			e.publish(t, ev(id, fmt.Sprint(key), "", fmt.Sprintf("0/%X", 0x1000+k)))
		}
		if k == 1 {
			for i := range 3 {
				e.publish(t, ev(fmt.Sprintf("refuse-%d", i), fmt.Sprintf("r%d", i), "refuse", "0/2000"))
			}
			for i := range 2 {
				e.publish(t, ev(fmt.Sprintf("gated-%d", i), fmt.Sprintf("g%d", i), "gated", "0/2000"))
			}
			dup := ev("dup", "d", "", "0/2000")
			e.publish(t, dup)
			dup.Header.Set(envelope.HeaderMsgID, "dup-again") // past JetStream's dedupe
			e.publish(t, dup)
			e.publish(t, ev("newer", "s", "", "0/9000"))
			e.publish(t, ev("older", "s", "", "0/100"))
		}
	}

	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.Concurrency, o.BatchSize, o.SkipStale, o.MaxDeliver = 2, 50, true, 1000 // the gated events retry until the gate opens
	})
	// With the gate closed, the gated events retry while everything else
	// goes through around them.
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: len(healthy) + 2, sink.ResultDuplicate: 1,
		sink.ResultStale: 1, sink.ResultDead: 3, sink.ResultRetried: 2})
	if got := e.effects(t); count(got, "gated-0")+count(got, "gated-1") != 0 {
		t.Fatalf("a gated event was applied while the gate was closed: %v", got)
	}
	e.exec(t, `UPDATE gate SET open = true`)
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: len(healthy) + 4})
	e.waitSettled(t)

	got := e.effects(t)
	for _, id := range append(healthy, "gated-0", "gated-1", "dup", "newer") {
		if n := count(got, id); n != 1 {
			t.Fatalf("%s applied %d times, want once", id, n)
		}
	}
	if len(got) != len(healthy)+4 {
		t.Fatalf("%d effects, want %d: refused or stale events must leave none", len(got), len(healthy)+4)
	}
	if r := obs.snapshot(); r[sink.ResultApplied] != len(healthy)+4 || r[sink.ResultDuplicate] != 1 || r[sink.ResultStale] != 1 || r[sink.ResultDead] != 3 {
		t.Fatalf("results %v", r)
	}

	// Each key's events in order; batches: far fewer transactions than
	// events; the handler saw jetstream_bridge.applying set for its event.
	rows, err := e.pool.Query(context.Background(), `SELECT event_id, note FROM effects ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	type effect struct{ ID, Note string }
	effs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[effect])
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	txs := map[string]int{}
	for _, f := range effs {
		tx, applying, _ := strings.Cut(f.Note, "/")
		txs[tx]++
		if applying != "billing" {
			t.Fatalf("%s: jetstream_bridge.applying=%q in the handler, want billing", f.ID, applying)
		}
		var key, k int
		if _, err := fmt.Sscanf(f.ID, "p-%d-%d", &key, &k); err == nil {
			if k != next[fmt.Sprint(key)] {
				t.Fatalf("key %d: event %d applied when %d was next", key, k, next[fmt.Sprint(key)])
			}
			next[fmt.Sprint(key)]++
		}
	}
	biggest := 0
	for _, n := range txs {
		biggest = max(biggest, n)
	}
	if len(txs) > len(effs)/3 || biggest < 5 {
		t.Fatalf("%d events applied in %d transactions (largest %d): want batches", len(effs), len(txs), biggest)
	}
	t.Logf("%d events applied in %d transactions, largest %d", len(effs), len(txs), biggest)

	for i := range 3 {
		if r := e.inbox(t, fmt.Sprintf("refuse-%d", i)); r == nil || r.Status != sink.StatusDead {
			t.Fatalf("refuse-%d: inbox %+v, want dead", i, r)
		}
	}
	if r := e.inbox(t, "older"); r == nil || r.Status != sink.StatusStale {
		t.Fatalf("older: inbox %+v, want stale", r)
	}
	if r := e.inbox(t, "gated-0"); r == nil || r.Status != sink.StatusProcessed || r.Attempts < 2 {
		t.Fatalf("gated-0: inbox %+v, want processed after at least 2 attempts", r)
	}
	if r := e.inbox(t, healthy[0]); r == nil || r.Status != sink.StatusProcessed || r.Attempts != 1 || r.Deliveries != 1 || r.StreamSeq == nil {
		t.Fatalf("%s: inbox %+v, want processed, 1 attempt, 1 delivery", healthy[0], r)
	}
	classes := map[string]int{}
	for _, dl := range e.deadLetters(t) {
		classes[dl.Class]++
	}
	if classes[envelope.ClassHandler] != 3 || len(classes) != 1 {
		t.Fatalf("dead letters by class %v, want 3 handler", classes)
	}
}

// TestSink_ContendingBatchesApplyEveryEventOnce: handlers of different keys
// lock the same two rows in opposite orders, so batches of two workers
// deadlock; Postgres breaks each cycle by failing one transaction, and every
// event is still applied exactly once, none dead-lettered even with
// MAX_DELIVER 2: a deadlock is not an attempt.
func TestSink_ContendingBatchesApplyEveryEventOnce(t *testing.T) {
	e := newEnv(t)
	e.exec(t,
		`CREATE TABLE shared (id int PRIMARY KEY, n int NOT NULL)`,
		`INSERT INTO shared VALUES (1, 0), (2, 0)`,
		`CREATE PROCEDURE public.apply(e jsonb) LANGUAGE plpgsql AS $$
		 DECLARE first int := CASE WHEN e->'payload'->>'order' = 'ab' THEN 1 ELSE 2 END;
		 BEGIN
		   PERFORM set_config('deadlock_timeout', '20ms', true); -- find cycles fast (default 1s)
		   UPDATE shared SET n = n + 1 WHERE id = first;
		   PERFORM pg_sleep(0.02);
		   UPDATE shared SET n = n + 1 WHERE id = 3 - first;
		   INSERT INTO effects (event_id) VALUES (e->>'event_id');
		 END $$`,
	)
	h, err := sink.NewSQLHandler(context.Background(), e.pool, "public.apply")
	if err != nil {
		t.Fatal(err)
	}
	const total = 30
	for i := range total {
		order := map[bool]string{true: "ab", false: "ba"}[i%2 == 0]
		m, err := e.builder.Build(&envelope.Row{
			EventID: fmt.Sprintf("c-%02d", i), ResourceType: "user", ResourceID: fmt.Sprint(i), EventType: "user.updated",
			Payload: []byte(fmt.Sprintf(`{"order":%q}`, order)), Headers: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05+00",
		}, pos("0/1000", i))
		if err != nil {
			t.Fatal(err)
		}
		e.publish(t, m)
	}
	logs := &testutil.SyncBuffer{}
	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.Concurrency, o.BatchSize, o.TxBatch, o.MaxDeliver = 4, 30, 3, 2 // odd: batches start with either order
		o.Log = zerolog.New(logs).Level(zerolog.DebugLevel)
	})
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := obs.get(sink.ResultApplied); n < total {
			return fmt.Errorf("%d of %d applied (%v)", n, total, obs.snapshot())
		}
		return nil
	})
	e.waitSettled(t)
	got := e.effects(t)
	for i := range total {
		if n := count(got, fmt.Sprintf("c-%02d", i)); n != 1 {
			t.Fatalf("c-%02d applied %d times, want once", i, n)
		}
	}
	var a, b int
	if err := e.pool.QueryRow(context.Background(), `SELECT (SELECT n FROM shared WHERE id = 1), (SELECT n FROM shared WHERE id = 2)`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	if a != total || b != total {
		t.Fatalf("shared counters %d and %d, want %d each: a rolled-back effect leaked or an event was lost", a, b, total)
	}
	if r := obs.snapshot(); r[sink.ResultDead] != 0 || r[sink.ResultApplied] != total {
		t.Fatalf("results %v: want %d applied, none dead", r, total)
	}
	// The scenario did happen: Postgres broke lock cycles, in batches or
	// in events applied alone.
	if n := strings.Count(logs.String(), "SQLSTATE 40P01"); n == 0 {
		t.Fatal("no deadlock in the sink's log: the handlers did not contend")
	} else {
		t.Logf("%d deadlocks broken by Postgres", n)
	}
}
