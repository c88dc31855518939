package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/chaos"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

const (
	appSource  = "app_a"
	appTarget  = "app_b"
	streamName = "jetstream-bridge-stream"
	slotName   = "chaos_app_a"
	durable    = appTarget + "-workers"
)

var (
	publishSubject = appSource + ".sync." + appTarget
	dlqSubject     = appTarget + ".sync.dlq"
)

// targetSchema is the sink side's handler. It records every applied event in
// applied — deliberately without a unique constraint, so that a double apply
// shows — in the sink's inbox transaction, and writes that row first: an
// attempt that then sleeps ("slow":ms, so that kills and crashes often find a
// handler mid-transaction) or fails must leave no trace, or the event shows
// as applied twice. Events marked "fail":"once" fail until the sink has
// recorded a failed attempt in the inbox (a rolled-back attempt cannot leave
// a mark of its own); "fail":"always" are refused for good (SQLSTATE JBDLQ:
// dead-lettered at once).
const targetSchema = `
CREATE TABLE applied (
    id            bigserial   PRIMARY KEY,
    event_id      text        NOT NULL,
    resource_type text        NOT NULL,
    resource_id   text        NOT NULL,
    seq           bigint      NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION public.chaos_apply(e jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p jsonb := e -> 'payload';
    failed_before boolean;
BEGIN
    INSERT INTO applied (event_id, resource_type, resource_id, seq)
    VALUES (e ->> 'event_id', e ->> 'resource_type', e ->> 'resource_id', (p ->> 'seq')::bigint);
    IF p ? 'slow' THEN
        PERFORM pg_sleep((p ->> 'slow')::int / 1000.0);
    END IF;
    IF p ->> 'fail' = 'always' THEN
        RAISE EXCEPTION 'chaos: % is refused for good', e ->> 'event_id' USING ERRCODE = 'JBDLQ';
    END IF;
    IF p ->> 'fail' = 'once' THEN
        SELECT error_message IS NOT NULL INTO failed_before
        FROM public.jetstream_inbox_events WHERE event_id = e ->> 'event_id';
        IF NOT coalesce(failed_before, false) THEN
            RAISE EXCEPTION 'chaos: injected failure of %', e ->> 'event_id';
        END IF;
    END IF;
END
$$;`

// sourceSchema holds the writers' per-key counters. A writer locks its keys'
// counters (in key order, so writers never deadlock) and increments them for
// each event; the lock is held to commit, so within a key the counter's order
// is commit order, and rolled-back increments leave no gap.
const sourceSchema = `CREATE TABLE chaos_key_seq (key text PRIMARY KEY, seq bigint NOT NULL DEFAULT 0)`

// world is one chaos run's environment.
type world struct {
	t     *testing.T
	p     chaos.Profile
	start time.Time

	pg     *localenv.Postgres
	nats   *localenv.NATS
	srcURL string
	dstURL string
	src    *pgxpool.Pool
	dst    *pgxpool.Pool

	relays     [2]*service
	relayAddrs [2]string
	sinks      []*service // two; three when partitioned, so partitions move on a kill

	fo *pgPair // with the postgres-failover fault: the standby, the failovers

	mu        sync.Mutex
	faults    map[chaos.Fault]int
	takeovers []time.Duration
}

func newWorld(t *testing.T, p chaos.Profile) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := &world{t: t, p: p, start: time.Now(), faults: map[chaos.Fault]int{}}
	relayBin, sinkBin := testutil.BuildBinary(t, "relay"), testutil.BuildBinary(t, "sink")
	w.pg = testutil.StartPostgres(t)
	w.nats = testutil.StartNATS(t)
	for _, db := range []string{"source", "target"} {
		if err := w.pg.CreateDatabase(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	w.srcURL, w.dstURL = w.pg.URL("source"), w.pg.URL("target")
	w.startPair()
	w.src = mustPool(t, ctx, w.srcURL, int32(p.Writers+4))
	w.dst = mustPool(t, ctx, w.dstURL, 4)
	if _, err := w.src.Exec(ctx, sourceSchema); err != nil {
		t.Fatal(err)
	}
	if _, err := w.src.Exec(ctx, `INSERT INTO chaos_key_seq (key) SELECT k FROM unnest($1::text[]) k`, keys(p.Keys)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.dst.Exec(ctx, targetSchema); err != nil {
		t.Fatal(err)
	}

	relayEnv := []string{
		"DATABASE_URL=" + w.srcURL, "NATS_URLS=" + w.nats.URL(), "APP_NAME=" + appSource, "DESTINATION_APP=" + appTarget,
		"REPLICATION_SLOT=" + slotName, "LOG_LEVEL=info", "LOG_FORMAT=json", "SLOT_CHECK_INTERVAL=5s",
		"ENV_NAME=", "JETSTREAM_STREAM_NAME=", "OUTBOX_TABLE=", "PUBLICATION=", "AUTO_PROVISION=true",
	}
	sinkEnv := []string{
		"DATABASE_URL=" + w.dstURL, "NATS_URLS=" + w.nats.URL(), "APP_NAME=" + appTarget, "DESTINATION_APP=" + appSource,
		"HANDLER=sql:public.chaos_apply", "SKIP_STALE=true", "ACK_WAIT=3s", "BACKOFF=250ms,1s",
		// Redeliveries caused by crashes and restarts count as attempts
		// (a message that keeps killing its sink must end somewhere); the
		// run's faults would use up the default 5 on healthy events.
		"MAX_DELIVER=100",
		"SHUTDOWN_TIMEOUT=10s", "LOG_LEVEL=info", "LOG_FORMAT=json", "HTTP_ADDR=",
		"ENV_NAME=", "JETSTREAM_STREAM_NAME=", "INBOX_TABLE=", "ROUTES_FILE=", "FILTER_SUBJECT=", "DURABLE_NAME=",
		"AUTO_PROVISION=true",
	}
	nSinks := 2
	if p.Partitions > 0 {
		// With partitions each key's events are applied by one process at a
		// time, all of them, in commit order: no stale event may hide an
		// order problem (the last SKIP_STALE wins). Provisioning creates the
		// per-partition consumers and the ownership tables; a short lease
		// keeps a killed sink's partitions from waiting long.
		part := "PARTITIONS=" + strconv.Itoa(p.Partitions)
		relayEnv = append(relayEnv, part)
		sinkEnv = append(sinkEnv, part, "SKIP_STALE=false", "PARTITION_LEASE=2s")
		nSinks = 3
	}
	// Provision once up front, so that a broken setup fails here, plainly.
	for _, pr := range []struct {
		bin string
		env []string
	}{{relayBin, relayEnv}, {sinkBin, sinkEnv}} {
		p := testutil.StartProcess(t, pr.bin, pr.env, "provision")
		if err := p.Wait(2 * time.Minute); err != nil {
			t.Fatalf("provision: %v\n%s", err, p.Output())
		}
	}
	for i := range w.relays {
		w.relayAddrs[i] = testutil.FreeAddr(t)
		env := append(slices.Clone(relayEnv), "HTTP_ADDR="+w.relayAddrs[i])
		if i == 1 {
			// Read coalescing engages at two transactions per linger: from
			// 2,000 a second with the default 1ms, from 40 a second with
			// 50ms, i.e. at CHAOS_RATE 120 and more (~2.9 events per
			// transaction). The second relay takes it, so that whenever it
			// is the active one its reads wait for bursts through the faults.
			env = append(env, "BATCH_LINGER=50ms")
		}
		w.relays[i] = &service{t: t, name: fmt.Sprintf("relay-%d", i+1), bin: relayBin, env: env}
	}
	w.sinks = make([]*service, nSinks)
	for i := range w.sinks {
		w.sinks[i] = &service{t: t, name: fmt.Sprintf("sink-%d", i+1), bin: sinkBin, env: sinkEnv}
	}
	for _, s := range w.services() {
		s.start()
	}
	testutil.Eventually(t, 2*time.Minute, func() error {
		if w.activeRelay() < 0 {
			return errors.New("no relay is replicating yet")
		}
		ready := `"message":"consuming"`
		if p.Partitions > 0 {
			ready = `"message":"joined the partitioned group"`
		}
		for _, s := range w.sinks {
			if !strings.Contains(s.output(), ready) {
				return fmt.Errorf("%s not consuming yet:\n%s", s.name, testutil.Tail(s.output(), 5))
			}
		}
		return nil
	})
	return w
}

func (w *world) services() []*service {
	return append([]*service{w.relays[0], w.relays[1]}, w.sinks...)
}

func (w *world) logf(format string, args ...any) {
	w.t.Helper()
	w.t.Logf("[%7.1fs] "+format, append([]any{time.Since(w.start).Seconds()}, args...)...)
}

func mustPool(t *testing.T, ctx context.Context, url string, conns int32) *pgxpool.Pool {
	t.Helper()
	pool, err := localenv.OpenPool(ctx, url, conns, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func keys(n int) []string {
	types := []string{"user", "org", "order", "item"}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s/%d", types[i%len(types)], i/len(types))
	}
	return out
}

// ---- processes ----

// service is one supervised binary: like systemd's Restart=always, a process
// that exits without being stopped on purpose is started again (and the exit
// is recorded: the bridge should ride out every injected fault without one).
type service struct {
	t        *testing.T
	name     string
	bin      string
	env      []string
	mu       sync.Mutex
	proc     *testutil.Process
	down     bool     // stopped on purpose
	starts   int      // processes started
	previous []string // output of earlier processes
	exits    []string // unexpected exits, with the log tail
}

func (s *service) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startLocked()
}

func (s *service) startLocked() {
	if s.proc != nil {
		s.previous = append(s.previous, s.proc.Output())
	}
	s.proc = testutil.StartProcess(s.t, s.bin, s.env)
	s.down = false
	s.starts++
}

// kill sends SIGKILL and waits for the process to be gone.
func (s *service) kill() {
	s.mu.Lock()
	s.down = true
	p := s.proc
	s.mu.Unlock()
	p.Kill()
	p.Wait(10 * time.Second)
}

func (s *service) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.Output()
}

// allOutput is the output of every process this service ran.
func (s *service) allOutput() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(append(slices.Clone(s.previous), s.proc.Output()), "\n")
}

// check restarts the process if it exited on its own. It holds the lock
// throughout, so a kill (which marks the service down first) is never taken
// for an unexpected exit.
func (s *service) check(w *world) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return
	}
	select {
	case <-s.proc.Done():
	default:
		return
	}
	err := s.proc.Wait(0)
	w.logf("%s exited unexpectedly (%v); restarting it. Log tail:\n%s", s.name, err, testutil.Tail(s.proc.Output(), 8))
	s.exits = append(s.exits, fmt.Sprintf("%v: %s", err, testutil.Tail(s.proc.Output(), 3)))
	s.startLocked()
}

// supervise restarts processes that exit unexpectedly until ctx ends.
func (w *world) supervise(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range w.services() {
			s.check(w)
		}
	}
}

// relayCounters reads the named metrics from a relay's /metrics, for the
// report ("name value, ..."; "unavailable" when the relay does not answer).
func relayCounters(addr string, names ...string) string {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return "unavailable"
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "unavailable"
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if ok && slices.Contains(names, name) {
			out = append(out, strings.TrimPrefix(name, "jetstream_bridge_relay_")+" "+value)
		}
	}
	return strings.Join(out, ", ")
}

// activeRelay returns the index of the relay that streams from the slot
// (its /readyz replication check is ok), or -1.
func (w *world) activeRelay() int {
	client := http.Client{Timeout: 2 * time.Second}
	for i, addr := range w.relayAddrs {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			continue
		}
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err == nil && body.Checks["replication"] == "ok" {
			return i
		}
	}
	return -1
}

// ---- writers ----

// ledger is what the writers know: the ids they rolled back on purpose.
// Which events committed is read back from the outbox at the end: a commit
// interrupted by a Postgres crash has an unknown outcome.
type ledger struct {
	mu         sync.Mutex
	rolledBack []string
	commits    int
	rollbacks  int
	errors     int
}

// write runs one writer until ctx ends: transactions of one to four events
// (now and then a large one), over random keys, some rolled back, paced by
// tokens (one per transaction).
func (w *world) write(ctx context.Context, id int, seed uint64, tokens <-chan struct{}, l *ledger) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)+1))
	allKeys := keys(w.p.Keys)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tokens:
		}
		n := 1 + rng.IntN(4)
		if rng.Float64() < 0.01 {
			n = 20 + rng.IntN(41)
		}
		type ev struct {
			id, key, fail string
			slow          int // handler milliseconds, 0 for none
		}
		evs := make([]ev, n)
		for i := range evs {
			evs[i] = ev{id: uuid(rng), key: allKeys[rng.IntN(len(allKeys))]}
			switch f := rng.Float64(); {
			case f < w.p.PermanentRate:
				evs[i].fail = chaos.FailAlways
			case f < w.p.PermanentRate+w.p.FailOnceRate:
				evs[i].fail = chaos.FailOnce
			}
			if rng.Float64() < w.p.SlowRate {
				evs[i].slow = 50 + rng.IntN(251)
			}
		}
		rollback := rng.Float64() < w.p.RollbackRate
		err := func() error {
			tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			tx, err := w.src.Begin(tctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(context.Background())
			lock := make([]string, 0, n)
			for _, e := range evs {
				lock = append(lock, e.key)
			}
			slices.Sort(lock)
			var b pgx.Batch
			b.Queue(`SELECT key FROM chaos_key_seq WHERE key = ANY($1) ORDER BY key FOR UPDATE`, slices.Compact(lock))
			for _, e := range evs {
				typ, rid, _ := strings.Cut(e.key, "/")
				b.Queue(`WITH s AS (UPDATE chaos_key_seq SET seq = seq + 1 WHERE key = $1 RETURNING seq)
					INSERT INTO jetstream_outbox_events (event_id, resource_type, resource_id, event_type, payload)
					SELECT $2::uuid, $3, $4, 'updated',
						jsonb_strip_nulls(jsonb_build_object('seq', s.seq, 'fail', $5::text, 'slow', $6::int, 'writer', $7::int)) FROM s`,
					e.key, e.id, typ, rid, nullIf(e.fail), nullIf(e.slow), id)
			}
			if err := tx.SendBatch(tctx, &b).Close(); err != nil {
				return err
			}
			if rollback {
				tx.Rollback(tctx) // whatever it returns, nothing of it commits
				l.mu.Lock()
				for _, e := range evs {
					l.rolledBack = append(l.rolledBack, e.id)
				}
				l.rollbacks++
				l.mu.Unlock()
				return nil
			}
			if err := tx.Commit(tctx); err != nil {
				return err
			}
			l.mu.Lock()
			l.commits++
			l.mu.Unlock()
			return nil
		}()
		if err != nil && ctx.Err() == nil {
			l.mu.Lock()
			l.errors++
			l.mu.Unlock()
			select { // Postgres is probably down: do not spin
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// pace sends a token per transaction at the profile's event rate until ctx
// ends. Tokens do not pile up while writers are blocked.
func (w *world) pace(ctx context.Context, tokens chan<- struct{}) {
	const meanTx = 0.99*2.5 + 0.01*40 // events per transaction, see write
	every := time.Duration(float64(time.Second) * meanTx / float64(w.p.Rate))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			select {
			case tokens <- struct{}{}:
			default:
			}
		}
	}
}

// nullIf returns nil (SQL NULL) for a zero value.
func nullIf[T comparable](v T) any {
	var zero T
	if v == zero {
		return nil
	}
	return v
}

func uuid(rng *rand.Rand) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return testutil.FormatUUID(b)
}

// ---- faults ----

// inject runs one step: the fault, the pause, the recovery.
func (w *world) inject(ctx context.Context, st chaos.Step) {
	w.mu.Lock()
	w.faults[st.Fault]++
	n := 0
	for _, c := range w.faults {
		n += c
	}
	w.mu.Unlock()
	switch st.Fault {
	case chaos.RelayFailover:
		active := w.activeRelay()
		if active < 0 {
			active = st.Pick % 2
		}
		w.logf("fault %d: kill -9 %s (active), standby takes over, restart after %s", n, w.relays[active].name, st.Pause.Round(time.Millisecond))
		w.relays[active].kill()
		killed := time.Now()
		other := 1 - active
		deadline := killed.Add(30 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if w.activeRelay() == other {
				d := time.Since(killed)
				w.mu.Lock()
				w.takeovers = append(w.takeovers, d)
				w.mu.Unlock()
				w.logf("  %s took over the slot after %s", w.relays[other].name, d.Round(time.Millisecond))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		sleepUntil(killed.Add(st.Pause))
		w.relays[active].start()
	case chaos.RelayCrashAll:
		w.logf("fault %d: kill -9 both relays, restart after %s", n, st.Pause.Round(time.Millisecond))
		for _, r := range w.relays {
			r.kill()
		}
		time.Sleep(st.Pause)
		for _, r := range w.relays {
			r.start()
		}
	case chaos.SinkKill:
		s := w.sinks[st.Pick%len(w.sinks)]
		w.logf("fault %d: kill -9 %s, restart after %s", n, s.name, st.Pause.Round(time.Millisecond))
		s.kill()
		time.Sleep(st.Pause)
		s.start()
	case chaos.NATSRestart:
		w.logf("fault %d: NATS down for %s", n, st.Pause.Round(time.Millisecond))
		w.nats.Shutdown()
		time.Sleep(st.Pause)
		w.retry("start nats", w.nats.Start)
	case chaos.PostgresRestart:
		w.logf("fault %d: Postgres crash (stop -m immediate), down for %s", n, st.Pause.Round(time.Millisecond))
		if err := w.pg.Stop("immediate"); err != nil {
			w.t.Errorf("stop postgres: %v", err)
		}
		time.Sleep(st.Pause)
		w.retry("start postgres", func() error {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return w.pg.Start(sctx)
		})
	case chaos.PostgresFailover:
		w.failPostgresOver(ctx, n, st)
	}
}

func (w *world) retry(what string, f func() error) {
	var err error
	for i := 0; i < 10; i++ {
		if err = f(); err == nil {
			return
		}
		w.logf("%s: %v; retrying", what, err)
		time.Sleep(time.Second)
	}
	w.t.Errorf("%s: %v", what, err)
}

func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

// ---- reading the end state ----

func (w *world) committedCount(ctx context.Context) (int, error) {
	var n int
	err := w.src.QueryRow(ctx, `SELECT count(*) FROM jetstream_outbox_events`).Scan(&n)
	return n, err
}

// settledCount is the number of inbox rows in a final state.
func (w *world) settledCount(ctx context.Context) (int, error) {
	var n int
	err := w.dst.QueryRow(ctx, `SELECT count(*) FROM jetstream_inbox_events WHERE status IN ('processed', 'stale', 'dead')`).Scan(&n)
	return n, err
}

func (w *world) consumerIdle(ctx context.Context, js jetstream.JetStream) error {
	names := []string{durable}
	if w.p.Partitions > 0 {
		names = names[:0]
		for p := range w.p.Partitions {
			names = append(names, sink.PartitionDurable(durable, p))
		}
	}
	for _, name := range names {
		c, err := js.Consumer(ctx, streamName, name)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("consumer %s: %d pending, %d awaiting ack", name, info.NumPending, info.NumAckPending)
		}
	}
	return nil
}

// partitionsOwned counts the partitions owned by a member whose lease is
// live; every partition must end owned by exactly one (the table has one row
// per partition, so one owner each).
func (w *world) partitionsOwned(ctx context.Context) (int, error) {
	var n int
	err := w.dst.QueryRow(ctx, `SELECT count(*) FROM jetstream_bridge_partitions p
		JOIN jetstream_bridge_members m ON m.durable = p.durable AND m.member = p.owner
		WHERE p.durable = $1 AND p.owner <> '' AND m.lease_until > now()`, durable).Scan(&n)
	return n, err
}

func (w *world) readInput(ctx context.Context, js jetstream.JetStream, l *ledger) (chaos.Input, error) {
	var in chaos.Input
	l.mu.Lock()
	in.RolledBack = slices.Clone(l.rolledBack)
	l.mu.Unlock()
	in.NoStale = w.p.Partitions > 0
	rows, err := w.src.Query(ctx, `SELECT event_id::text, resource_type || '/' || resource_id,
		(payload ->> 'seq')::bigint, coalesce(payload ->> 'fail', '') FROM jetstream_outbox_events ORDER BY id`)
	if err != nil {
		return in, err
	}
	in.Committed, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (chaos.Event, error) {
		var e chaos.Event
		return e, r.Scan(&e.ID, &e.Key, &e.Seq, &e.Fail)
	})
	if err != nil {
		return in, fmt.Errorf("read outbox: %w", err)
	}
	rows, err = w.dst.Query(ctx, `SELECT id, event_id, resource_type || '/' || resource_id, seq FROM applied`)
	if err != nil {
		return in, err
	}
	in.Applied, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (chaos.Applied, error) {
		var a chaos.Applied
		return a, r.Scan(&a.Order, &a.EventID, &a.Key, &a.Seq)
	})
	if err != nil {
		return in, fmt.Errorf("read applied: %w", err)
	}
	rows, err = w.dst.Query(ctx, `SELECT event_id, status, deliveries, error_message IS NOT NULL FROM jetstream_inbox_events`)
	if err != nil {
		return in, err
	}
	in.Inbox, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (chaos.InboxRow, error) {
		var i chaos.InboxRow
		return i, r.Scan(&i.EventID, &i.Status, &i.Deliveries, &i.Failed)
	})
	if err != nil {
		return in, fmt.Errorf("read inbox: %w", err)
	}
	stored := publishSubject
	if w.p.Partitions > 0 {
		stored += ".*" // {subject}.{partition}
	}
	if in.Stream, err = readSubject(ctx, js, stored, func(m jetstream.Msg) string { return m.Headers().Get(envelope.HeaderMsgID) }); err != nil {
		return in, fmt.Errorf("read stream: %w", err)
	}
	in.DLQ, err = readSubject(ctx, js, dlqSubject, func(m jetstream.Msg) string {
		if env, err := envelope.Parse(m.Data()); err == nil {
			return env.EventID
		}
		return m.Headers().Get(envelope.HeaderMsgID)
	})
	if err != nil {
		return in, fmt.Errorf("read dlq: %w", err)
	}
	return in, nil
}

// readSubject returns id(m) for every message stored on subject, in stream order.
func readSubject(ctx context.Context, js jetstream.JetStream, subject string, id func(jetstream.Msg) string) ([]string, error) {
	s, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, err
	}
	var want uint64
	for _, n := range info.State.Subjects { // one entry per subject a wildcard matches
		want += n
	}
	if want == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, err
	}
	var out []string
	for uint64(len(out)) < want {
		if ctx.Err() != nil {
			return out, fmt.Errorf("read %d of %d messages: %w", len(out), want, ctx.Err())
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return out, err
		}
		for m := range batch.Messages() {
			out = append(out, id(m))
		}
	}
	return out, nil
}

func connectNATS(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
