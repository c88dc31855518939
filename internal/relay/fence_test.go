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
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
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
	p := startSyncPair(t)
	standby, url, stream := p.standby, p.url, p.stream
	r := p.relay(t, "relay_fence", relay.FenceAuto, &counts{})
	run(t, r)
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
	p := startSyncPair(t)
	pool := p.pool
	for _, mode := range []relay.FenceMode{relay.FenceOff, relay.FenceAuto} {
		slot := "relay_latency_" + string(mode)
		lat := &latencies{}
		r := p.relay(t, slot, mode, lat)
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

// syncPair is a primary with a synchronous streaming standby, the outbox,
// JetStream with the stream "jsb", and a pool on the multi-host URL: what
// the sync fence tests run a relay against.
type syncPair struct {
	primary *localenv.Postgres
	standby *testutil.Standby
	url     string
	nc      *nats.Conn
	js      jetstream.JetStream
	pool    *pgxpool.Pool
	stream  jetstream.Stream
}

func startSyncPair(t *testing.T) *syncPair {
	t.Helper()
	ctx := context.Background()
	p := &syncPair{primary: testutil.StartPostgres(t)}
	if err := p.primary.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := provision.Outbox(ctx, p.primary.URL("app"), migrations.Names{Outbox: table, Publication: pubName}); err != nil {
		t.Fatal(err)
	}
	p.standby = testutil.StartStandby(t, p.primary, testutil.StandbyOptions{Synchronous: true})
	p.url = testutil.MultiHostURL("app", p.primary, p.standby.Postgres)
	var err error
	if p.nc, err = nats.Connect(testutil.StartNATS(t).URL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.nc.Close)
	if p.js, err = jetstream.New(p.nc, publish.JetStreamOptions(256, 5*time.Second)...); err != nil {
		t.Fatal(err)
	}
	if p.stream, err = p.js.CreateStream(ctx, jetstream.StreamConfig{Name: "jsb", Subjects: []string{"app_a.sync.>"}}); err != nil {
		t.Fatal(err)
	}
	if p.pool, err = pgxpool.New(ctx, p.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.pool.Close)
	return p
}

// relay creates slot and returns a relay on it with the fence in mode.
func (p *syncPair) relay(t *testing.T, slot string, mode relay.FenceMode, obs relay.Observer) *relay.Relay {
	t.Helper()
	if _, err := provision.CreateSlot(context.Background(), p.primary.URL("app"), slot); err != nil {
		t.Fatal(err)
	}
	return relay.New(relay.Options{
		DB: p.pool, ConnString: p.url, NC: p.nc, JS: p.js,
		Slot: slot, Publication: pubName, OutboxTable: table,
		Producer: "app_a", Subjects: envelope.Subjects{App: "app_a", Dest: "app_b"}, MaxPayload: 8 << 10,
		Stream: "jsb", StreamSubjects: []string{"app_a.sync.>"}, Manage: true,
		UseDLQ: true, AckTimeout: 5 * time.Second, StatusInterval: 50 * time.Millisecond, Fence: mode,
		Observer: obs, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
}

// run runs r until the test ends; the relay must stop without an error.
func run(t *testing.T, r *relay.Relay) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
}
