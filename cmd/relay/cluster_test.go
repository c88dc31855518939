package main_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestClusterStreamLeaderLoss runs the relay and a sink against a 3-node
// JetStream cluster with an R3 stream, and kills the stream's leader twice
// while writers commit: the remaining two nodes elect a new leader, the relay
// and the sink keep going (events committed while the old leader is down
// are applied before it comes back), the node rejoins, and in the end every
// committed event is stored once and applied exactly once.
func TestClusterStreamLeaderLoss(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3)
	h := newHarness(t, testutil.NewDatabase(t), c.URLs())
	h.env = append(h.env, "STREAM_REPLICAS=3")
	h.provision()

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, err := h.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.CachedInfo().Config.Replicas, 3; got != want {
		t.Fatalf("stream replicas=%d, want %d", got, want)
	}

	target := testutil.NewDatabase(t)
	tpool, err := pgxpool.New(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer tpool.Close()
	if _, err := tpool.Exec(ctx, `
		CREATE TABLE effects (id bigserial PRIMARY KEY, event_id text NOT NULL);
		CREATE FUNCTION public.cluster_apply(e jsonb) RETURNS void LANGUAGE sql AS
			$$ INSERT INTO effects (event_id) VALUES (e ->> 'event_id') $$`); err != nil {
		t.Fatal(err)
	}
	relay := h.start()
	waitReplicating(t, relay)
	sink := testutil.StartProcess(t, testutil.BuildBinary(t, "sink"), []string{
		"DATABASE_URL=" + target, "NATS_URLS=" + c.URLs(), "APP_NAME=" + appB, "DESTINATION_APP=" + appA,
		"HANDLER=sql:public.cluster_apply", "STREAM_REPLICAS=3", "ACK_WAIT=2s", "BACKOFF=250ms,1s", "MAX_DELIVER=50",
		"LOG_LEVEL=info", "HTTP_ADDR=", "ENV_NAME=", "FILTER_SUBJECT=", "ROUTES_FILE=", "DURABLE_NAME=",
	})

	// Writers commit small transactions until told to stop.
	writeCtx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for writeCtx.Err() == nil {
				if _, err := h.insertTx(writeCtx, 3, false); err != nil && writeCtx.Err() == nil {
					t.Errorf("insert: %v", err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	applied := func() int {
		var n int
		if err := tpool.QueryRow(ctx, `SELECT count(DISTINCT event_id) FROM effects`).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	// waitApplied waits until every event committed so far is applied.
	waitApplied := func(what string) {
		t.Helper()
		var committed int
		if err := h.pool.QueryRow(ctx, `SELECT count(*) FROM jetstream_outbox_events`).Scan(&committed); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 90*time.Second, func() error {
			if n := applied(); n < committed {
				return fmt.Errorf("%s: %d of %d applied; relay:\n%s\nsink:\n%s", what, n, committed,
					testutil.Tail(relay.Output(), 5), testutil.Tail(sink.Output(), 5))
			}
			return nil
		})
	}
	// Traffic must flow end to end (the sink's consumer exists on all three
	// nodes) before the first fault.
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := applied(); n < 50 {
			return fmt.Errorf("%d applied before any fault", n)
		}
		return nil
	})
	waitApplied("before any fault")

	for round := 1; round <= 2; round++ {
		leader, node := streamLeader(t, ctx, h.js, c)
		t.Logf("round %d: stream leader is %s; shutting it down", round, leader)
		killed := time.Now()
		node.Shutdown()
		// The survivors elect a new leader...
		testutil.Eventually(t, 60*time.Second, func() error {
			info, err := streamInfo(ctx, h.js)
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == leader {
				return fmt.Errorf("no new stream leader yet (%+v)", info.Cluster)
			}
			return nil
		})
		t.Logf("round %d: new leader elected %s after the shutdown", round, time.Since(killed).Round(time.Millisecond))
		// ...and what is committed now flows end to end on two nodes.
		time.Sleep(500 * time.Millisecond) // let writers commit during the outage
		waitApplied(fmt.Sprintf("round %d, leader %s down", round, leader))
		t.Logf("round %d: events committed during the outage applied %s after the shutdown", round, time.Since(killed).Round(time.Millisecond))
		if err := node.Start(); err != nil {
			t.Fatalf("restart %s: %v", leader, err)
		}
		testutil.Eventually(t, 60*time.Second, func() error {
			info, err := streamInfo(ctx, h.js)
			if err != nil {
				return err
			}
			if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("stream replicas not all back: %+v", info.Cluster)
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current {
					return fmt.Errorf("replica %s not current yet", r.Name)
				}
			}
			// The consumer is a raft group of its own: with one peer still
			// catching up, losing another leaves it without a quorum.
			ci, err := consumerInfo(ctx, h.js, appB+"-workers")
			if err != nil {
				return err
			}
			if ci.Cluster == nil || ci.Cluster.Leader == "" || len(ci.Cluster.Replicas) != 2 {
				return fmt.Errorf("consumer replicas not all back: %+v", ci.Cluster)
			}
			for _, r := range ci.Cluster.Replicas {
				if !r.Current {
					return fmt.Errorf("consumer replica %s not current yet", r.Name)
				}
			}
			return nil
		})
	}

	stopWriting()
	wg.Wait()
	waitApplied("after the faults")
	committed := h.committedIDs()
	h.checkExactlyOnce(subjAB, committed, nil, nil, false)
	var total, distinct int
	if err := tpool.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM effects`).Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	if total != len(committed) || distinct != len(committed) {
		t.Fatalf("%d effects (%d distinct) for %d committed events, want each exactly once", total, distinct, len(committed))
	}
	var missing int
	if err := tpool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::text[]) id WHERE id NOT IN (SELECT event_id FROM effects)`,
		committed).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("%d committed events without an effect (%v)", missing, err)
	}
	t.Logf("%d events committed, each applied exactly once, across 2 stream leader losses", len(committed))
}

func streamInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	s, err := js.Stream(ictx, stream)
	if err != nil {
		return nil, err
	}
	return s.Info(ictx)
}

// streamLeader returns the name of the stream's leader and its node.
func streamLeader(t *testing.T, ctx context.Context, js jetstream.JetStream, c *localenv.Cluster) (string, *localenv.NATS) {
	t.Helper()
	var name string
	var node *localenv.NATS
	testutil.Eventually(t, 30*time.Second, func() error {
		info, err := streamInfo(ctx, js)
		if err != nil {
			return err
		}
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("stream has no leader")
		}
		for _, n := range c.Nodes {
			if n.Server().Name() == info.Cluster.Leader {
				name, node = info.Cluster.Leader, n
				return nil
			}
		}
		return fmt.Errorf("leader %q is none of the nodes", info.Cluster.Leader)
	})
	return name, node
}

func consumerInfo(ctx context.Context, js jetstream.JetStream, durable string) (*jetstream.ConsumerInfo, error) {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ictx, stream, durable)
	if err != nil {
		return nil, err
	}
	return c.Info(ictx)
}
