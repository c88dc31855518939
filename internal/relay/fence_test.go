package relay_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// TestSyncFenceHoldsEventsUntilTheStandbyConfirms: the window in which a
// failover makes phantom events, without a crash. A primary with a
// synchronous standby whose WAL receiver is stopped: a writer's COMMIT
// blocks waiting for the standby, although its commit record is flushed on
// the primary and the walsender has decoded it. With the sync fence (auto,
// the default) the event is not in the stream while the writer waits; once
// the standby confirms, the writer's commit returns and the event is
// published.
func TestSyncFenceHoldsEventsUntilTheStandbyConfirms(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := testutil.StartPostgres(t)
	if err := primary.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	names := migrations.Names{Outbox: table, Publication: pubName}
	if err := provision.Outbox(ctx, primary.URL("app"), names); err != nil {
		t.Fatal(err)
	}
	const slot = "relay_fence"
	if _, err := provision.CreateSlot(ctx, primary.URL("app"), slot); err != nil {
		t.Fatal(err)
	}
	standby := testutil.StartStandby(t, primary, testutil.StandbyOptions{Synchronous: true})
	url := testutil.MultiHostURL("app", primary, standby.Postgres)

	nc, err := nats.Connect(testutil.StartNATS(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, publish.JetStreamOptions(256, 5*time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "jsb", Subjects: []string{"app_a.sync.>"}}); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	r := relay.New(relay.Options{
		DB: pool, ConnString: url, NC: nc, JS: js,
		Slot: slot, Publication: pubName, OutboxTable: table,
		Producer: "app_a", Subjects: envelope.Subjects{App: "app_a", Dest: "app_b"}, MaxPayload: 8 << 10,
		Stream: "jsb", StreamSubjects: []string{"app_a.sync.>"}, Manage: true,
		UseDLQ: true, AckTimeout: 5 * time.Second, StatusInterval: 50 * time.Millisecond,
		Observer: &counts{}, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	runCtx, stop := context.WithCancel(ctx)
	relayErr := make(chan error, 1)
	go func() { relayErr <- r.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-relayErr; err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	stream, err := js.Stream(ctx, "jsb")
	if err != nil {
		t.Fatal(err)
	}
	insert := func(ctx context.Context, conn *pgx.Conn) (string, error) {
		var id string
		err := conn.QueryRow(ctx, "INSERT INTO "+table+" (resource_type, event_type) VALUES ('order', 'created') RETURNING event_id::text").Scan(&id)
		return id, err
	}
	writer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	// The relay runs and publishes while the standby confirms.
	first, err := insert(ctx, writer)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if !streamHas(ctx, stream, first) {
			return errors.New("first event not published")
		}
		return nil
	})

	resume := standby.PauseReceiver()
	// The writer's id is its own, known before its commit returns.
	id := testutil.NewUUID()
	committed := make(chan error, 1)
	go func() {
		_, err := writer.Exec(ctx, "INSERT INTO "+table+" (event_id, resource_type, event_type) VALUES ($1::uuid, 'order', 'created')", id)
		committed <- err
	}()
	// The walsender decodes the commit while the writer waits: the relay
	// holds it at the fence (or, without a fence, publishes it).
	testutil.Eventually(t, 30*time.Second, func() error {
		if held, _ := r.FenceHeld(); held == 1 || streamHas(ctx, stream, id) {
			return nil
		}
		return errors.New("event not decoded yet")
	})
	for until := time.Now().Add(3 * time.Second); time.Now().Before(until); time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-committed:
			t.Fatalf("the writer's commit returned while the standby was stopped: %v", err)
		default:
		}
		if streamHas(ctx, stream, id) {
			t.Fatal("event published while its writer still waits for the synchronous standby: a failover now would make it a phantom")
		}
	}
	if held, age := r.FenceHeld(); held != 1 || age < 3*time.Second {
		t.Errorf("fence holds %d events, oldest %s; want 1, at least 3s", held, age)
	}

	resume()
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the writer's commit did not return after the standby resumed")
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if !streamHas(ctx, stream, id) {
			return fmt.Errorf("event %s not published after the standby confirmed it", id)
		}
		return nil
	})
	if held, _ := r.FenceHeld(); held != 0 {
		t.Errorf("fence still holds %d events", held)
	}
}

// TestSyncFenceLatency measures commit→ack with a synchronous standby,
// fence on and off: one writer, one row per transaction, one at a time.
// A measurement, not a check: it runs with FENCE_LATENCY=1 only.
func TestSyncFenceLatency(t *testing.T) {
	if os.Getenv("FENCE_LATENCY") == "" {
		t.Skip("set FENCE_LATENCY=1 to measure")
	}
	ctx := context.Background()
	primary := testutil.StartPostgres(t)
	if err := primary.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	names := migrations.Names{Outbox: table, Publication: pubName}
	if err := provision.Outbox(ctx, primary.URL("app"), names); err != nil {
		t.Fatal(err)
	}
	standby := testutil.StartStandby(t, primary, testutil.StandbyOptions{Synchronous: true})
	url := testutil.MultiHostURL("app", primary, standby.Postgres)
	nc, err := nats.Connect(testutil.StartNATS(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, publish.JetStreamOptions(256, 5*time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "jsb", Subjects: []string{"app_a.sync.>"}}); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	for _, mode := range []relay.FenceMode{relay.FenceOff, relay.FenceAuto} {
		slot := "relay_latency_" + string(mode)
		if _, err := provision.CreateSlot(ctx, primary.URL("app"), slot); err != nil {
			t.Fatal(err)
		}
		lat := &latencies{}
		r := relay.New(relay.Options{
			DB: pool, ConnString: url, NC: nc, JS: js,
			Slot: slot, Publication: pubName, OutboxTable: table,
			Producer: "app_a", Subjects: envelope.Subjects{App: "app_a", Dest: "app_b"}, MaxPayload: 8 << 10,
			Stream: "jsb", StreamSubjects: []string{"app_a.sync.>"}, Manage: true,
			UseDLQ: true, AckTimeout: 5 * time.Second, Fence: mode,
			Observer: lat, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		})
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(runCtx) }()
		const n = 500
		for i := 0; i < n; i++ {
			if _, err := pool.Exec(ctx, "INSERT INTO "+table+" (resource_type, event_type) VALUES ('order', 'created')"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		testutil.Eventually(t, 60*time.Second, func() error {
			if c := lat.count(); c < n {
				return fmt.Errorf("%d of %d acked", c, n)
			}
			return nil
		})
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		p50, p99 := lat.percentiles()
		t.Logf("SYNC_STANDBY_FENCE=%s, synchronous standby: commit→ack p50 %s, p99 %s (%d events)", mode, p50, p99, lat.count())
		if _, err := pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
			t.Fatal(err)
		}
	}
}

type latencies struct {
	counts
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) CommitToAck(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }

func (l *latencies) count() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.d) }

func (l *latencies) percentiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)*99/100]
}
