package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestBinary_PartitionsKeepKeyOrderThroughChurn is guarantee 10: with
// PARTITIONS=16, SKIP_STALE=false and the relay running, events written by
// concurrent transactions are applied exactly once and, per key, in commit
// order, while one sink process is killed with SIGKILL, two join and one
// leaves with SIGTERM; at the end every partition has one live owner.
//
// The handler checks order itself: each event carries its key's sequence
// number (the writer of a key commits them in that order), and the procedure
// compares it with the key's last applied one under a row lock, recording any
// event that is not the next one.
func TestBinary_PartitionsKeepKeyOrderThroughChurn(t *testing.T) {
	const (
		partitions = 16
		keys       = 500
		events     = 20000
		writers    = 8
		perTx      = 10
	)
	start := time.Now()
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	if _, err := w.conn.Exec(ctx, `
		CREATE TABLE applied (id bigserial PRIMARY KEY, event_id text NOT NULL, k text NOT NULL, s int NOT NULL, pid int, at timestamptz);
		CREATE TABLE key_state (k text PRIMARY KEY, last_s int NOT NULL);
		CREATE TABLE violations (k text NOT NULL, s int NOT NULL, last_s int NOT NULL);
		CREATE PROCEDURE public.apply_ordered(e jsonb) LANGUAGE plpgsql AS $$
		DECLARE
			key text := e->'payload'->>'k';
			seq int := (e->'payload'->>'s')::int;
			prev int;
		BEGIN
			INSERT INTO key_state (k, last_s) VALUES (key, 0) ON CONFLICT DO NOTHING;
			SELECT last_s INTO prev FROM key_state WHERE k = key FOR UPDATE;
			IF seq <> prev + 1 THEN
				INSERT INTO violations VALUES (key, seq, prev);
			END IF;
			UPDATE key_state SET last_s = greatest(last_s, seq) WHERE k = key;
			INSERT INTO applied (event_id, k, s, pid, at) VALUES (e->>'event_id', key, seq, pg_backend_pid(), clock_timestamp());
		END $$`); err != nil {
		t.Fatal(err)
	}

	relay := testutil.StartProcess(t, testutil.BuildBinary(t, "relay"), []string{
		"DATABASE_URL=" + w.db, "NATS_URLS=" + w.nats, "APP_NAME=billing", "DESTINATION_APP=orders",
		"PARTITIONS=" + strconv.Itoa(partitions), "STATUS_INTERVAL=100ms", "LOG_LEVEL=warn", "HTTP_ADDR=",
		"ENV_NAME=", "REPLICATION_SLOT=",
	})
	type member struct {
		p    *testutil.Process
		addr string
	}
	startSink := func() member {
		addr := testutil.FreeAddr(t)
		return member{addr: addr, p: w.start(t, "HANDLER=sql:public.apply_ordered", "PARTITIONS="+strconv.Itoa(partitions),
			"SKIP_STALE=false", "ACK_WAIT=5s", "PARTITION_LEASE=2s", "SHUTDOWN_TIMEOUT=20s", "LOG_LEVEL=info", "HTTP_ADDR="+addr)}
	}
	var sinks []member
	for range 4 {
		sinks = append(sinks, startSink())
	}

	// Wait for the relay's slot: rows committed before it exists are not in
	// its stream of changes (relay backfill would publish them). A slot being
	// created is active already, but streams only what commits after its
	// consistent point, which confirmed_flush_lsn shows once it is reached.
	testutil.Eventually(t, time.Minute, func() error {
		var ok bool
		if err := w.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots
			WHERE slot_name = 'jetstream_bridge_billing' AND active AND confirmed_flush_lsn IS NOT NULL)`).Scan(&ok); err != nil || !ok {
			return fmt.Errorf("relay slot not active yet (%v)", err)
		}
		return nil
	})
	pool, err := pgxpool.New(ctx, w.db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	// Writers: key k belongs to writer k%writers, which numbers its events
	// 1, 2, 3… and commits them in that order; writers run concurrently.
	var wg sync.WaitGroup
	written := make(chan int, events)
	for wr := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(wr), 7))
			var mine []int
			for k := wr; k < keys; k += writers {
				mine = append(mine, k)
			}
			seq := map[int]int{}
			for n := 0; n < events/writers; n += perTx {
				tx, err := pool.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				for range perTx {
					k := mine[rng.IntN(len(mine))]
					seq[k]++
					if _, err := tx.Exec(ctx, `INSERT INTO jetstream_outbox_events (resource_type, resource_id, event_type, payload)
						VALUES ('user', $1, 'user.updated', jsonb_build_object('k', $1::text, 's', $2::int))`, "k"+strconv.Itoa(k), seq[k]); err != nil {
						t.Error(err)
						return
					}
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
					return
				}
				written <- perTx
			}
		})
	}
	applied := func() (total, distinct int) {
		if err := w.conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM applied`).Scan(&total, &distinct); err != nil {
			t.Fatal(err)
		}
		return total, distinct
	}
	waitApplied := func(n int) {
		t.Helper()
		testutil.Eventually(t, 4*time.Minute, func() error {
			if _, d := applied(); d < n {
				return fmt.Errorf("%d of %d applied", d, n)
			}
			return nil
		})
	}

	waitApplied(events / 5)
	t.Logf("%s: %d applied; kill -9 one sink", time.Since(start).Round(time.Millisecond), events/5)
	if err := sinks[0].p.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed at %s", time.Now().UTC().Format("15:04:05.000"))
	sinks = append(sinks, startSink(), startSink())
	waitApplied(events / 2)
	t.Logf("%s: half applied; SIGTERM one sink", time.Since(start).Round(time.Millisecond))
	if err := sinks[1].p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := sinks[1].p.Wait(time.Minute); err != nil {
		t.Fatalf("the SIGTERMed sink did not exit cleanly: %v", err)
	}
	wg.Wait()
	close(written)
	total := 0
	for n := range written {
		total += n
	}
	if total != events {
		t.Fatalf("wrote %d events, want %d", total, events)
	}
	waitApplied(events)
	t.Logf("%s: all %d applied", time.Since(start).Round(time.Millisecond), events)

	all, distinct := applied()
	var violations int
	if err := w.conn.QueryRow(ctx, `SELECT count(*) FROM violations`).Scan(&violations); err != nil {
		t.Fatal(err)
	}
	if lost, twice := events-distinct, all-distinct; lost != 0 || twice != 0 || violations != 0 {
		rows, _ := w.conn.Query(ctx, `SELECT k, s, last_s FROM violations LIMIT 10`)
		vs, _ := pgx.CollectRows(rows, pgx.RowToMap)
		rows, _ = w.conn.Query(ctx, `SELECT a.k, a.s, a.id, a.pid, a.at::text, i.stream_seq, i.deliveries, i.processed_at::text
			FROM applied a JOIN jetstream_inbox_events i ON i.event_id = a.event_id
			WHERE a.k IN (SELECT k FROM violations) ORDER BY a.k, a.id`)
		detail, _ := pgx.CollectRows(rows, pgx.RowToMap)
		t.Fatalf("lost %d, applied twice %d, per-key order violations %d (first: %v)\nthose keys, in apply order: %v", lost, twice, violations, vs, detail)
	}

	// Every partition owned by exactly one live process, and the live
	// processes together say they own all of them.
	live := sinks[2:]
	testutil.Eventually(t, time.Minute, func() error {
		var owned, aliveOwners int
		if err := w.conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE p.owner <> ''), count(*) FILTER (WHERE m.lease_until > now())
			FROM jetstream_bridge_partitions p LEFT JOIN jetstream_bridge_members m ON m.durable = p.durable AND m.member = p.owner
			WHERE p.durable = 'orders-workers'`).Scan(&owned, &aliveOwners); err != nil {
			return err
		}
		if owned != partitions || aliveOwners != partitions {
			return fmt.Errorf("%d partitions owned, %d by live members, want %d", owned, aliveOwners, partitions)
		}
		sum := 0
		for _, m := range live {
			_, body := testutil.HTTPGet("http://" + m.addr + "/metrics")
			n := int(sample(body, "jetstream_bridge_sink_partitions_owned"))
			if n == 0 || n > (partitions+len(live)-1)/len(live) {
				return fmt.Errorf("a process owns %d partitions, want a fair share of %d over %d", n, partitions, len(live))
			}
			sum += n
		}
		if sum != partitions {
			return fmt.Errorf("live processes report %d partitions owned, want %d", sum, partitions)
		}
		return nil
	})
	_ = relay

	// status names an owner for every partition; audit finds every event of
	// every partition applied.
	out, err := w.runCmd(t, []string{"status", "--json"}, "PARTITIONS="+strconv.Itoa(partitions))
	if err != nil {
		t.Fatalf("sink status: %v\n%s", err, out)
	}
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status output: %v\n%s", err, out)
	}
	if len(st.Partitions) != partitions || len(st.Members) != len(live) {
		t.Fatalf("status shows %d partitions and %d members, want %d and %d:\n%s", len(st.Partitions), len(st.Members), partitions, len(live), out)
	}
	for _, ps := range st.Partitions {
		if ps.Owner == "" || !ps.OwnerAlive || ps.NumPending != 0 || ps.NumAckPending != 0 {
			t.Fatalf("partition %d in status: %+v", ps.Partition, ps)
		}
	}
	res := testutil.RunCommand(t, time.Minute, w.bin, w.env("PARTITIONS="+strconv.Itoa(partitions)), "audit", "--since", "1h", "--settle", "0s")
	if res.Code != 0 || !strings.Contains(res.Stdout, strconv.Itoa(events)) {
		t.Fatalf("sink audit over the partitions: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	claims := 0
	for _, m := range sinks {
		claims += strings.Count(m.p.Output(), `"message":"partition claimed"`)
	}
	t.Logf("%d partition claims over the run", claims)
	t.Logf("%s: done; lost 0, applied twice 0, order violations 0, 16 partitions over %d processes",
		time.Since(start).Round(time.Millisecond), len(live))
}
