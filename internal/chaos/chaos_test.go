package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/chaos"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

var chaosFlag = flag.String("chaos", "", "chaos profile: short | long | off (default: $CHAOS, else short)")

func TestMain(m *testing.M) { testutil.Main(m) }

// TestChaos drives the real relay and sink binaries through a seeded storm of
// faults while writers commit events, then checks that every committed event
// was applied exactly once, in order per key, and that nothing rolled back
// ever showed up. CHAOS=short (the default, about two minutes) or CHAOS=long
// (`make chaos`), or -chaos=...; CHAOS=off skips it. CHAOS_SEED reproduces a
// run's schedule and workload. See docs/RELIABILITY.md.
func TestChaos(t *testing.T) {
	name := *chaosFlag
	if name == "" {
		name = os.Getenv("CHAOS")
	}
	if strings.EqualFold(name, "off") {
		t.Skip("CHAOS=off")
	}
	p, err := chaos.ProfileFor(name, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CHAOS_SEED=%q: expected a whole number", v)
		}
	}
	t.Logf("chaos profile %s: seed %d (CHAOS_SEED=%d reproduces the schedule and workload); %s of faults, %d events/s, %d keys, %d partitions",
		p.Name, seed, seed, p.Duration, p.Rate, p.Keys, p.Partitions)

	w := newWorld(t, p)
	_, js := connectNATS(t, w.nats.URL())
	w.logf("setup done: 2 relays (one standing by), %d sinks, writers starting", len(w.sinks))

	superCtx, stopSupervising := context.WithCancel(context.Background())
	var supervisor sync.WaitGroup
	supervisor.Go(func() { w.supervise(superCtx) })
	defer func() { stopSupervising(); supervisor.Wait() }()

	// Writers and the fault scheduler run for the profile's duration.
	runCtx, stopRun := context.WithTimeout(context.Background(), p.Duration)
	defer stopRun()
	l := &ledger{}
	tokens := make(chan struct{}, 16)
	var writers sync.WaitGroup
	writers.Go(func() { w.pace(runCtx, tokens) })
	for i := range p.Writers {
		writers.Go(func() { w.write(runCtx, i, seed, tokens, l) })
	}
	var lastFaultEnd time.Time
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		sched := chaos.NewScheduler(seed, p)
		for {
			st := sched.Next()
			select {
			case <-runCtx.Done():
				return
			case <-time.After(st.Quiet):
			}
			if runCtx.Err() != nil {
				return
			}
			w.inject(runCtx, st)
			lastFaultEnd = time.Now()
		}
	}()
	writers.Wait()
	writersStopped := time.Now()
	<-faultsDone
	l.mu.Lock()
	w.logf("writers stopped: %d transactions committed, %d rolled back, %d failed (faults)", l.commits, l.rollbacks, l.errors)
	l.mu.Unlock()

	// Everything must be up again: the supervisor restarts what exited, the
	// faults brought back what they stopped.
	for _, s := range w.services() {
		s.check(w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.Drain+2*time.Minute)
	defer cancel()
	committed, err := retryValue(ctx, func() (int, error) { return w.committedCount(ctx) })
	if err != nil {
		t.Fatalf("count committed events: %v", err)
	}
	w.logf("waiting (at most %s) for %d committed events to settle", p.Drain, committed)
	drainCtx, cancelDrain := context.WithTimeout(ctx, p.Drain)
	defer cancelDrain()
	settled, lastReport := 0, time.Now()
	for {
		settled, err = w.settledCount(drainCtx)
		if err == nil && settled >= committed {
			if err = w.consumerIdle(drainCtx, js); err == nil {
				break
			}
		}
		if time.Since(lastReport) > 15*time.Second {
			w.logf("  %d of %d settled (%v)", settled, committed, err)
			lastReport = time.Now()
		}
		if drainCtx.Err() != nil {
			w.logf("backlog not drained within %s: %d of %d settled (%v)", p.Drain, settled, committed, err)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	drained := time.Now()
	if lastFaultEnd.IsZero() {
		lastFaultEnd = writersStopped
	}
	w.logf("settled: %d of %d", settled, committed)

	// Partitioned: every partition ends owned by one live sink (a sink
	// restarted by the last fault may still be taking its share).
	owned := 0
	if p.Partitions > 0 {
		ownCtx, cancelOwn := context.WithTimeout(ctx, time.Minute)
		for {
			owned, err = w.partitionsOwned(ownCtx)
			if (err == nil && owned == p.Partitions) || ownCtx.Err() != nil {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		cancelOwn()
	}

	in, err := w.readInput(ctx, js, l)
	if err != nil {
		t.Fatalf("read the end state: %v", err)
	}
	r := chaos.Analyze(in)
	w.mu.Lock()
	r.Faults = w.faults
	r.Faults[chaos.HandlerError] = r.FailOnceInjected + r.PermanentInjected
	takeovers := w.takeovers
	w.mu.Unlock()
	r.Drain, r.DrainTotal = drained.Sub(lastFaultEnd), drained.Sub(writersStopped)

	var b bytes.Buffer
	fmt.Fprintf(&b, "chaos %s, seed %d, %s of faults\n", p.Name, seed, p.Duration)
	r.Print(&b)
	if p.Partitions > 0 {
		fmt.Fprintf(&b, "partitions owned by a live sink at the end: %d of %d\n", owned, p.Partitions)
		claims := 0
		for _, s := range w.sinks {
			claims += strings.Count(s.allOutput(), `"message":"partition claimed"`)
		}
		fmt.Fprintf(&b, "partitions claimed (first shares, takeovers after kills, rebalancing): %d\n", claims)
	}
	gaps, afterFailedPull, lostDeliveries, filled := 0, 0, 0, 0
	for _, s := range w.sinks {
		for _, line := range strings.Split(s.allOutput(), "\n") {
			if !strings.Contains(line, `"message":"deliveries lost on the way;`) {
				continue
			}
			var e struct {
				Lost    int  `json:"lost_deliveries"`
				Filled  int  `json:"read_from_stream"`
				Suspect bool `json:"after_a_failed_pull"`
			}
			if json.Unmarshal([]byte(line), &e) == nil {
				gaps, lostDeliveries, filled = gaps+1, lostDeliveries+e.Lost, filled+e.Filled
				if e.Suspect {
					afterFailedPull++
				}
			}
		}
	}
	fmt.Fprintf(&b, "sink delivery gaps (FILL_GAPS): %d (%d found after a failed pull), %d deliveries lost on the way, %d messages read from the stream instead\n",
		gaps, afterFailedPull, lostDeliveries, filled)
	fmt.Fprintf(&b, "relay failovers: %d, standby took over in %s\n", len(takeovers), summarize(takeovers))
	w.reportFailovers(&b)
	for _, s := range w.services() {
		s.mu.Lock()
		fmt.Fprintf(&b, "%s: %d processes, %d unexpected exits\n", s.name, s.starts, len(s.exits))
		for _, e := range s.exits {
			fmt.Fprintf(&b, "  exit: %s\n", e)
		}
		s.mu.Unlock()
	}
	for i, addr := range w.relayAddrs {
		// Counters of the relay's current process (they restart with it).
		fmt.Fprintf(&b, "relay-%d now: %s\n", i+1, relayCounters(addr,
			"jetstream_bridge_relay_events_published_total", "jetstream_bridge_relay_fast_batched_total",
			"jetstream_bridge_relay_read_lingers_total", "jetstream_bridge_relay_duplicates_total"))
	}
	t.Log("\n" + b.String())
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Errorf("write CHAOS_REPORT: %v", err)
		}
	}

	for _, f := range r.Failures() {
		t.Errorf("chaos (seed %d): %s", seed, f)
	}
	if owned != p.Partitions {
		t.Errorf("chaos (seed %d): %d of %d partitions owned by a live sink at the end", seed, owned, p.Partitions)
	}
	if len(r.LostIDs) > 0 {
		w.diagnose(ctx, in, r.LostIDs)
	}
	if len(r.OrderViolationKeys) > 0 {
		w.diagnoseOrder(ctx, r.OrderViolationKeys)
	}

	// A clean stop after all that: SIGTERM, exit 0.
	stopSupervising()
	supervisor.Wait()
	for _, s := range w.services() {
		s.mu.Lock()
		p := s.proc
		s.down = true
		s.mu.Unlock()
		p.Signal(syscall.SIGTERM)
	}
	for _, s := range w.services() {
		if err := s.proc.Wait(40 * time.Second); err != nil {
			t.Errorf("%s did not exit 0 on SIGTERM: %v\n%s", s.name, err, testutil.Tail(s.proc.Output(), 10))
		}
	}
}

// diagnose logs where lost events got to.
func (w *world) diagnose(ctx context.Context, in chaos.Input, ids []string) {
	inStream := map[string]int{}
	for i, id := range in.Stream {
		if _, ok := inStream[id]; !ok {
			inStream[id] = i + 1
		}
	}
	for _, id := range ids[:min(len(ids), 10)] {
		var status, errMsg string
		var deliveries, attempts int
		err := w.dst.QueryRow(ctx, `SELECT status, deliveries, processing_attempts, coalesce(error_message, '')
			FROM jetstream_inbox_events WHERE event_id = $1`, id).Scan(&status, &deliveries, &attempts, &errMsg)
		w.logf("lost %s: stream position %d (0 = never published); inbox: %s deliveries=%d attempts=%d error=%q (%v)",
			id, inStream[id], status, deliveries, attempts, errMsg, err)
	}
}

// diagnoseOrder logs, for keys applied out of order, each applied event
// in apply order with what the inbox knows of it.
func (w *world) diagnoseOrder(ctx context.Context, keys []string) {
	rows, err := w.dst.Query(ctx, `SELECT a.resource_type || '/' || a.resource_id, a.seq, a.event_id,
			a.applied_at::text, coalesce(i.subject, ''), coalesce(i.stream_seq, 0), coalesce(i.deliveries, 0), coalesce(i.processing_attempts, 0)
		FROM applied a LEFT JOIN jetstream_inbox_events i ON i.event_id = a.event_id
		WHERE a.resource_type || '/' || a.resource_id = ANY($1) ORDER BY 1, a.id`, keys)
	if err != nil {
		w.logf("diagnose order: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var key, id, at, subject string
		var seq, streamSeq int64
		var deliveries, attempts int
		if err := rows.Scan(&key, &seq, &id, &at, &subject, &streamSeq, &deliveries, &attempts); err != nil {
			w.logf("diagnose order: %v", err)
			return
		}
		w.logf("order %s seq %d: %s applied %s, %s stream seq %d, deliveries %d, attempts %d", key, seq, id, at, subject, streamSeq, deliveries, attempts)
	}
}

func retryValue(ctx context.Context, f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err == nil || ctx.Err() != nil {
			return n, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func summarize(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	var sum, worst time.Duration
	for _, d := range ds {
		sum += d
		worst = max(worst, d)
	}
	return fmt.Sprintf("%s on average, %s at worst", (sum / time.Duration(len(ds))).Round(time.Millisecond), worst.Round(time.Millisecond))
}
