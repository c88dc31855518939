package sink_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func TestAssign(t *testing.T) {
	members := []string{"m-c", "m-a", "m-d", "m-b"}
	got := sink.Assign(members, 16)
	if !slices.Equal(got, sink.Assign([]string{"m-a", "m-b", "m-c", "m-d", "m-a"}, 16)) {
		t.Fatal("assignment depends on the order or repetition of members")
	}
	per := map[string]int{}
	for p, m := range got {
		if !slices.Contains(members, m) {
			t.Fatalf("partition %d assigned to %q", p, m)
		}
		per[m]++
	}
	for _, m := range members {
		if per[m] != 4 {
			t.Fatalf("shares %v, want 4 each", per)
		}
	}
	// Uneven: no member above ceil(n/len).
	for n := 1; n <= 40; n++ {
		for k := 1; k <= 7; k++ {
			ms := make([]string, k)
			for i := range ms {
				ms[i] = fmt.Sprintf("host-%d", i)
			}
			per := map[string]int{}
			for _, m := range sink.Assign(ms, n) {
				per[m]++
			}
			for m, c := range per {
				if c > (n+k-1)/k {
					t.Fatalf("n=%d members=%d: %s has %d", n, k, m, c)
				}
			}
		}
	}
	// A member joining takes partitions and moves few others.
	five := sink.Assign(append(slices.Clone(members), "m-e"), 16)
	moved := 0
	for p := range got {
		if five[p] != got[p] && five[p] != "m-e" {
			moved++
		}
	}
	if moved > 4 {
		t.Fatalf("a fifth member moved %d partitions between the other four", moved)
	}
}

// TestPartitionFenceRollsBackOldOwner: an owner whose partition was taken
// over while its handler ran cannot commit the apply: the transaction rolls
// back, the message is not acked, and the sink stops with ErrFenced.
func TestPartitionFenceRollsBackOldOwner(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.applyPartitions(t)
	table, _, _ := migrations.PartitionTables("")
	if _, err := e.pool.Exec(ctx, `INSERT INTO `+table+` (durable, partition, owner, epoch) VALUES ($1, 0, 'old', 1)`, durable); err != nil {
		t.Fatal(err)
	}

	entered, proceed := make(chan struct{}), make(chan struct{})
	h := &effectHandler{before: func(ev *sink.Event, call int) error {
		if ev.Envelope.EventID == "e2" && call == 1 {
			close(entered)
			<-proceed
		}
		return nil
	}}
	s, err := sink.New(sink.Options{
		DB: e.pool, JS: e.js, Source: sink.JetStreamPull(e.cons), Handler: h, DLQSubject: dlqSubject, UseDLQ: true,
		Concurrency: 2, BatchSize: 10, FetchWait: 200 * time.Millisecond,
		Fence: &sink.Fence{Table: table, Durable: durable, Partition: 0, Owner: "old", Epoch: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	e.publish(t, e.event(t, "e1", "order", "1", pos("0/10", 0)))
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := len(e.effects(t)); n != 1 {
			return fmt.Errorf("%d effects, want e1's", n)
		}
		return nil
	})
	e.publish(t, e.event(t, "e2", "order", "2", pos("0/20", 0)))
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("handler not called for e2")
	}
	// Another member takes the partition over while e2's handler runs.
	if _, err := e.pool.Exec(ctx, `UPDATE `+table+` SET owner = 'new', epoch = 2 WHERE durable = $1 AND partition = 0`, durable); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	select {
	case err := <-done:
		if !errors.Is(err, sink.ErrFenced) {
			t.Fatalf("Run returned %v, want ErrFenced", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the old owner kept running after its partition was taken over")
	}
	if got := e.effects(t); !slices.Equal(got, []string{"e1"}) {
		t.Fatalf("effects %v, want only e1: the old owner committed after the takeover", got)
	}
	if row := e.inbox(t, "e2"); row != nil {
		t.Fatalf("inbox row of e2 committed by the old owner: %+v", row)
	}
	info, err := e.info()
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 1 {
		t.Fatalf("ack floor %d, want 1: e2 must not be acked by the fenced owner", info.AckFloor.Stream)
	}
}

// TestPartitionMismatchStops: a message published with another partition
// count stops the sink with ErrPartitionMismatch; nothing is dead-lettered
// or applied.
func TestPartitionMismatchStops(t *testing.T) {
	e := newEnv(t)
	e.builder.Partitions = 16
	m := e.event(t, "e1", "order", "1", pos("0/10", 0))
	e.publishRaw(t, filter, m.Body, m.Header) // on the sink's subject, with the relay's 16-partition headers
	h := &effectHandler{}
	s, err := sink.New(sink.Options{
		DB: e.pool, JS: e.js, Source: sink.JetStreamPull(e.cons), Handler: h, DLQSubject: dlqSubject, UseDLQ: true,
		FetchWait: 200 * time.Millisecond, Partitions: 8,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if !errors.Is(err, sink.ErrPartitionMismatch) || ctx.Err() != nil {
		t.Fatalf("Run returned %v, want ErrPartitionMismatch before the deadline", err)
	}
	if !strings.Contains(err.Error(), "16 partitions") || !strings.Contains(err.Error(), "PARTITIONS=8") {
		t.Fatalf("error %q does not name both counts", err)
	}
	if got := e.effects(t); len(got) != 0 {
		t.Fatalf("applied %v", got)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("%d dead letters, want none", len(dl))
	}
}

// TestPartitionFenceRollsBackOldOwnerBatch is the same through the batch
// pipeline of a SQL handler: the ownership check fails the batch, and the
// event applied on its own is fenced at its commit.
func TestPartitionFenceRollsBackOldOwnerBatch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.applyPartitions(t, `CREATE PROCEDURE public.fenced_apply(e jsonb) LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock_shared(7); -- waits while the test holds lock 7
			INSERT INTO effects (event_id) VALUES (e->>'event_id');
		END $$`)
	table, _, _ := migrations.PartitionTables("")
	if _, err := e.pool.Exec(ctx, `INSERT INTO `+table+` (durable, partition, owner, epoch) VALUES ($1, 0, 'old', 1)`, durable); err != nil {
		t.Fatal(err)
	}
	h, err := (&sink.Handlers{DB: e.pool}).Build(ctx, "sql:public.fenced_apply")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(sink.Options{
		DB: e.pool, JS: e.js, Source: sink.JetStreamPull(e.cons), Handler: h, DLQSubject: dlqSubject, UseDLQ: true,
		Concurrency: 1, BatchSize: 10, TxBatch: 10, FetchWait: 200 * time.Millisecond,
		Fence: &sink.Fence{Table: table, Durable: durable, Partition: 0, Owner: "old", Epoch: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	e.publish(t, e.event(t, "e1", "order", "1", pos("0/10", 0)))
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := len(e.effects(t)); n != 1 {
			return fmt.Errorf("%d effects, want e1's", n)
		}
		return nil
	})
	conn, err := pgx.Connect(ctx, e.url) // holds lock 7 for its session
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(7)`); err != nil {
		t.Fatal(err)
	}
	e.publish(t, e.event(t, "e2", "order", "2", pos("0/20", 0)))
	e.publish(t, e.event(t, "e3", "order", "3", pos("0/20", 1)))
	testutil.Eventually(t, 30*time.Second, func() error {
		var waiting int
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7 AND NOT granted`).Scan(&waiting); err != nil {
			return err
		}
		if waiting == 0 {
			return errors.New("the batch is not in its handler yet")
		}
		return nil
	})
	if _, err := e.pool.Exec(ctx, `UPDATE `+table+` SET owner = 'new', epoch = 2 WHERE durable = $1 AND partition = 0`, durable); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(7)`); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, sink.ErrFenced) {
			t.Fatalf("Run returned %v, want ErrFenced", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the old owner kept running after its partition was taken over")
	}
	if got := e.effects(t); !slices.Equal(got, []string{"e1"}) {
		t.Fatalf("effects %v, want only e1: the old owner committed after the takeover", got)
	}
	info, err := e.info()
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 1 {
		t.Fatalf("ack floor %d, want 1", info.AckFloor.Stream)
	}
}

// TestPartitionFailedStartKeepsTheRowUnclean: a partition whose last owner
// stopped without settling what it fetched (clean = false) is claimed, but
// its Sink cannot start (here: New fails, as when JetStream is down). The
// claim is given back as it was found, not clean: otherwise the next owner
// would pull at once while the last owner's messages are not yet due for
// redelivery, and apply later events of their keys first.
func TestPartitionFailedStartKeepsTheRowUnclean(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.applyPartitions(t)
	table, members, _ := migrations.PartitionTables("")
	if _, err := e.pool.Exec(ctx, `INSERT INTO `+table+` (durable, partition, owner, epoch, clean) VALUES ($1, 0, '', 1, false)`, durable); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	starts := 0
	pc, err := sink.NewPartitioned(sink.PartitionedOptions{
		DB: e.pool, Tables: sink.PartitionTables{Partitions: table, Members: members}, Durable: durable, Partitions: 1,
		AckWait: time.Second, Lease: time.Second,
		New: func(p int, f *sink.Fence) (*sink.Sink, error) {
			mu.Lock()
			defer mu.Unlock()
			starts++
			return nil, errors.New("bind consumer: nats: no servers available")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- pc.Run(runCtx) }()
	testutil.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if starts < 2 {
			return fmt.Errorf("%d failed starts, want 2", starts)
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	var owner string
	var epoch int64
	var clean bool
	if err := e.pool.QueryRow(ctx, `SELECT owner, epoch, clean FROM `+table+` WHERE durable = $1 AND partition = 0`, durable).Scan(&owner, &epoch, &clean); err != nil {
		t.Fatal(err)
	}
	if owner != "" || epoch < 3 || clean {
		t.Fatalf("after failed starts: owner %q, epoch %d, clean %v; want no owner, claimed twice, still not clean", owner, epoch, clean)
	}
}
