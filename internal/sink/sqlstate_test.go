package sink_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// TestSink_RefusedCommitIsAnAttempt: a SQL handler inserts a row whose
// foreign key is deferred to COMMIT and names no parent, so every attempt of
// that event succeeds until COMMIT fails (SQLSTATE 23503). That is the
// event's failure: it is retried with BACKOFF, recorded on its inbox row and
// dead-lettered as exhausted after MAX_DELIVER attempts. The events it was
// batched with, and the ones queued behind it on other keys, are applied
// while it still waits for its retries.
func TestSink_RefusedCommitIsAnAttempt(t *testing.T) {
	for _, txBatch := range []int{1, 10} {
		t.Run(fmt.Sprintf("TX_BATCH=%d", txBatch), func(t *testing.T) {
			e := newEnv(t)
			e.exec(t,
				`CREATE TABLE parents (id text PRIMARY KEY)`,
				`INSERT INTO parents VALUES ('p')`,
				`CREATE TABLE children (id text PRIMARY KEY,
				   parent text NOT NULL REFERENCES parents DEFERRABLE INITIALLY DEFERRED)`,
				`CREATE PROCEDURE public.apply(e jsonb) LANGUAGE plpgsql AS $$
				 BEGIN
				   INSERT INTO children VALUES (e->>'event_id', e->'payload'->>'parent');
				   INSERT INTO effects (event_id) VALUES (e->>'event_id');
				 END $$`,
			)
			h, err := sink.NewSQLHandler(context.Background(), e.pool, "public.apply")
			if err != nil {
				t.Fatal(err)
			}
			ev := func(id, key, parent string) envelope.Message {
				m, err := e.builder.Build(&envelope.Row{
					EventID: id, ResourceType: "user", ResourceID: key, EventType: "user.updated",
					Payload: []byte(fmt.Sprintf(`{"parent":%q}`, parent)), Headers: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05+00",
				}, pos("0/1000", 0))
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			// The orphan first, so that it heads a batch; then more events
			// on other keys than the workers take in one round.
			orphan := ev("orphan", "o", "nobody")
			e.publish(t, orphan)
			const good = 40
			for i := range good {
				e.publish(t, ev(fmt.Sprintf("good-%02d", i), fmt.Sprint(i), "p"))
			}

			const maxDeliver, backoff = 3, 2 * time.Second
			start := time.Now()
			obs, _ := e.run(t, h, func(o *sink.Options) {
				o.TxBatch, o.Concurrency, o.BatchSize, o.MaxDeliver = txBatch, 2, 50, maxDeliver
				o.Backoff = []time.Duration{backoff}
			})
			// Every good event is applied while the orphan still waits out
			// its first BACKOFF.
			obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: good})
			if took, dead := time.Since(start), obs.get(sink.ResultDead); dead != 0 || took >= backoff {
				t.Fatalf("the good events took %s (dead letters meanwhile: %d): they waited behind the refused one's retries", took, dead)
			}
			obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1})
			e.waitSettled(t)
			if took := time.Since(start); took < (maxDeliver-1)*backoff {
				t.Fatalf("dead-lettered after %s: BACKOFF %s between %d attempts not kept", took, backoff, maxDeliver)
			}

			got := e.effects(t)
			if len(got) != good || count(got, "orphan") != 0 {
				t.Fatalf("effects %v: want each good event once and no orphan", got)
			}
			if r := obs.snapshot(); r[sink.ResultApplied] != good || r[sink.ResultRetried] != maxDeliver-1 {
				t.Fatalf("results %v: want %d applied, %d retried", r, good, maxDeliver-1)
			}
			dls := e.deadLetters(t)
			if len(dls) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dls))
			}
			checkDeadLetter(t, dls[0], orphan, envelope.ClassExhausted, "23503", maxDeliver)
			r := e.inbox(t, "orphan")
			if r == nil || r.Status != sink.StatusDead || r.Attempts != maxDeliver || !contains(r.Error, "foreign key") {
				t.Fatalf("inbox orphan=%+v, want dead after %d attempts, with the foreign key violation", r, maxDeliver)
			}
		})
	}
}

// TestSink_OversizedKeysArePoison: an event_id, or with SKIP_STALE a
// resource_id, too long for the inbox's keys is dead-lettered as poison at
// once, with the limit as the reason; the events around it are applied.
func TestSink_OversizedKeysArePoison(t *testing.T) {
	long := func(n int) string { // incompressible, so Postgres cannot fit it in an index by compressing it
		b := make([]byte, n/2)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(b)
	}
	for _, tc := range []struct {
		name, id, resourceID, reason string
	}{
		{"event_id", long(8000), "1", "event_id is 8000 bytes"},
		{"resource_id", "long-key", long(8000), "resource_id is 8000 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			h := &effectHandler{}
			obs, _ := e.run(t, h, func(o *sink.Options) { o.SkipStale = true })
			bad := e.event(t, tc.id, "user", tc.resourceID, pos("0/1000", 0))
			e.publish(t, bad)
			e.publish(t, e.event(t, "fine", "user", "2", pos("0/1000", 1)))

			obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1, sink.ResultDead: 1})
			e.waitSettled(t)
			if got := h.callLog(); len(got) != 1 || got[0] != "fine" {
				t.Fatalf("handler calls %d (%.40v), want only fine", len(got), got)
			}
			dls := e.deadLetters(t)
			if len(dls) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dls))
			}
			if dl := dls[0]; dl.Class != envelope.ClassPoison || dl.Deliveries != 1 || !contains(dl.Error, tc.reason) {
				t.Fatalf("dead letter class=%q deliveries=%d error=%q; want poison at the first delivery, %q",
					dl.Class, dl.Deliveries, dl.Error, tc.reason)
			}
		})
	}
}

// TestSink_InboxThatDoesNotFitStopsTheSink: an inbox table missing a column
// (SQLSTATE 42703) fails every event alike. The sink neither retries in
// silence nor dead-letters healthy events: Run returns the error, naming the
// SQLSTATE, and the message is handed back, to be applied once the table is
// fixed.
func TestSink_InboxThatDoesNotFitStopsTheSink(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `ALTER TABLE jetstream_inbox_events RENAME COLUMN tx_index TO tx_index_old`)
	h := &effectHandler{}
	s, err := sink.New(sink.Options{
		DB: e.pool, JS: e.js, Source: sink.JetStreamPull(e.cons), Handler: h,
		DLQSubject: dlqSubject, UseDLQ: true, FetchWait: 200 * time.Millisecond,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, e.event(t, "kept", "user", "1", pos("0/1000", 0)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatal("the sink kept running with an inbox table every statement fails on")
	}
	if err == nil || !strings.Contains(err.Error(), "42703") {
		t.Fatalf("Run returned %v, want the undefined column error (42703)", err)
	}
	if dls := e.deadLetters(t); len(dls) != 0 {
		t.Fatalf("%d dead letters: a schema problem must not dead-letter events", len(dls))
	}

	e.exec(t, `ALTER TABLE jetstream_inbox_events RENAME COLUMN tx_index_old TO tx_index`)
	obs, _ := e.run(t, h, nil)
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1})
	e.waitSettled(t)
	if got := e.effects(t); len(got) != 1 || got[0] != "kept" {
		t.Fatalf("effects %v, want kept once", got)
	}
}
