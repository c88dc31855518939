package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

var subjAB = appA + ".sync." + appB

// TestConcurrentWritersOnlyCommittedOnceInOrder: many writers, some
// transactions rolled back; the stream holds exactly the committed events,
// each once, every transaction in its own order, commits in commit order.
// On the oldest supported nats-server, which has no fast batches, the relay
// publishes with one ack per message.
func TestConcurrentWritersOnlyCommittedOnceInOrder(t *testing.T) {
	t.Parallel()
	for _, srv := range testutil.NATSServers() {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			testConcurrentWritersOnlyCommittedOnceInOrder(t, srv)
		})
	}
}

func testConcurrentWritersOnlyCommittedOnceInOrder(t *testing.T, srv testutil.NATSServer) {
	h := newHarness(t, testutil.NewDatabase(t), srv.Start(t))
	p := h.start()
	waitReplicating(t, p)
	oldServer := srv.Name != "embedded"
	if oldServer && !strings.Contains(p.Output(), "nats-server before 2.14: publishing with one ack per message") {
		t.Fatalf("relay on nats-server %s does not say it publishes with one ack per message:\n%s", testutil.OldestNATSServer, p.Output())
	}

	ctx := context.Background()
	var mu sync.Mutex
	var txs [][]string
	var rolledBack []string
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < 40; i++ {
				rb := r.IntN(5) == 0
				ids, err := h.insertTx(ctx, 1+r.IntN(6), rb)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if rb {
					rolledBack = append(rolledBack, ids...)
				} else {
					txs = append(txs, ids)
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	committed := h.committedIDs()
	var n int
	for _, tx := range txs {
		n += len(tx)
	}
	if n != len(committed) || len(rolledBack) == 0 {
		t.Fatalf("writers committed %d rows, table holds %d; rolled back %d", n, len(committed), len(rolledBack))
	}
	h.waitCount(subjAB, len(committed), 30*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, txs, rolledBack, true)
	if oldServer {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(30 * time.Second); err != nil {
			t.Fatalf("relay after SIGTERM: %v\n%s", err, p.Output())
		}
		if !strings.Contains(p.Output(), `"fast_batched":0,`) {
			t.Fatalf("relay on nats-server %s sent fast batches:\n%s", testutil.OldestNATSServer, p.Output())
		}
	}
}

// TestEnvelopeAndHeaders checks one fully specified row and the gem's
// fallbacks field by field.
func TestEnvelopeAndHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	p := h.start()
	waitReplicating(t, p)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	execTx(t, h, []string{`INSERT INTO jetstream_outbox_events (event_id, resource_type, resource_id, event_type, payload, headers, trace_id, occurred_at)
VALUES ('11111111-1111-4111-8111-111111111111', 'user', 'u-1', 'created', '{"id":"u-1","name":"Ann \"A\""}',
        '{"x-tenant":"t1"}', $1, '2026-01-02 03:04:05.123456+00')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload, destination)
VALUES ('22222222-2222-4222-8222-222222222222', '', 'user.updated', '{"id":42}', 'app_c')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload, subject)
VALUES ('33333333-3333-4333-8333-333333333333', 'org', 'deleted', '[1,2]', 'app_a.sync.custom')`}, tp)
	h.waitCount(subjAB, 1, 20*time.Second, p)
	h.waitCount(appA+".sync.app_c", 1, 20*time.Second, p)
	h.waitCount(appA+".sync.custom", 1, 20*time.Second, p)

	m := h.readStream(subjAB)[0]
	var env map[string]any
	if err := json.Unmarshal(m.Data(), &env); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"event_id": "11111111-1111-4111-8111-111111111111", "schema_version": float64(1), "event_type": "created",
		"producer": appA, "resource_type": "user", "resource_id": "u-1", "occurred_at": "2026-01-02T03:04:05.123456Z",
		"trace_id": tp, "payload": map[string]any{"id": "u-1", "name": `Ann "A"`},
	}
	for k, v := range want {
		if got := env[k]; fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("envelope %s=%v, want %v", k, got, v)
		}
	}
	if len(env) != len(want) {
		t.Errorf("envelope has %d fields, want %d: %s", len(env), len(want), m.Data())
	}
	keys := []string{`"event_id"`, `"schema_version"`, `"event_type"`, `"producer"`, `"resource_type"`, `"resource_id"`, `"occurred_at"`, `"trace_id"`, `"payload"`}
	last := -1
	for _, k := range keys {
		i := strings.Index(string(m.Data()), k)
		if i < last {
			t.Errorf("field %s out of the gem's order in %s", k, m.Data())
		}
		last = i
	}
	hd := m.Headers()
	for k, v := range map[string]string{
		"Nats-Msg-Id": "11111111-1111-4111-8111-111111111111", "Content-Type": "application/json",
		"x-tenant": "t1", "traceparent": tp, "Bridge-Tx-Index": "0",
	} {
		if got := hd.Get(k); got != v {
			t.Errorf("header %s=%q, want %q", k, got, v)
		}
	}
	if hd.Get("Bridge-Commit-LSN") == "" || !strings.Contains(hd.Get("Bridge-Commit-LSN"), "/") {
		t.Errorf("Bridge-Commit-LSN=%q, want an LSN", hd.Get("Bridge-Commit-LSN"))
	}

	m2 := h.readStream(appA + ".sync.app_c")[0]
	env2, err := envelope.Parse(m2.Data())
	if err != nil {
		t.Fatal(err)
	}
	if env2.ResourceType != "user" || env2.ResourceID != "42" {
		t.Errorf("inferred resource_type=%q resource_id=%q, want user and 42 (from payload.id): %s", env2.ResourceType, env2.ResourceID, m2.Data())
	}
	m3 := h.readStream(appA + ".sync.custom")[0]
	if got := m3.Headers().Get("Bridge-Tx-Index"); got != "2" {
		t.Errorf("third row of the transaction has Bridge-Tx-Index=%q, want 2", got)
	}
	if !strings.Contains(string(m3.Data()), `"payload":[1, 2]`) { // jsonb's text form
		t.Errorf("array payload not kept: %s", m3.Data())
	}
}

// TestBulkStatementsArriveOnceInOrder: INSERT ... SELECT and COPY of
// thousands of rows, each one statement sharing a commit.
func TestBulkStatementsArriveOnceInOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	p := h.start()
	waitReplicating(t, p)
	ctx := context.Background()
	if _, err := h.pool.Exec(ctx, `INSERT INTO jetstream_outbox_events (resource_type, resource_id, event_type, payload)
		SELECT 'item', g::text, 'created', jsonb_build_object('n', g) FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}
	conn, err := h.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&lines, "item\t%d\tupdated\t{\"n\": %d}\n", i, i)
	}
	if _, err := conn.Conn().PgConn().CopyFrom(ctx, strings.NewReader(lines.String()),
		"COPY jetstream_outbox_events (resource_type, resource_id, event_type, payload) FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	committed := h.committedIDs()
	h.waitCount(subjAB, 8000, 60*time.Second, p)
	msgs := h.checkExactlyOnce(subjAB, committed, [][]string{committed[:5000], committed[5000:]}, nil, true)
	for i, m := range msgs { // within each statement the tx index counts up from 0
		want := i
		if i >= 5000 {
			want = i - 5000
		}
		if got := m.Headers().Get("Bridge-Tx-Index"); got != fmt.Sprint(want) {
			t.Fatalf("message %d: Bridge-Tx-Index=%s, want %d", i, got, want)
		}
	}
}

// TestKillDuringLargeTransaction kills the relay (SIGKILL) while it publishes
// one large transaction, restarts it, and expects every event exactly once.
func TestKillDuringLargeTransaction(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	h.provision()
	const total = 30000
	ctx := context.Background()
	if _, err := h.pool.Exec(ctx, `INSERT INTO jetstream_outbox_events (resource_type, resource_id, event_type, payload)
		SELECT 'item', (g % 100)::text, 'created', jsonb_build_object('n', g) FROM generate_series(1, $1::int) g`, total); err != nil {
		t.Fatal(err)
	}
	p := h.start("MAX_INFLIGHT=16")
	var at uint64
	testutil.Eventually(t, 60*time.Second, func() error {
		n, err := h.streamCount(subjAB)
		if err != nil || n < 500 {
			return fmt.Errorf("only %d published (%v)", n, err)
		}
		at = n
		return nil
	})
	p.Kill()
	p.Wait(10 * time.Second)
	if at >= total {
		t.Fatalf("relay finished the transaction before it was killed; the test proves nothing")
	}
	t.Logf("killed after %d of %d events", at, total)
	p2 := h.start()
	h.waitCount(subjAB, total, 120*time.Second, p2)
	committed := h.committedIDs()
	h.checkExactlyOnce(subjAB, committed, [][]string{committed}, nil, false)
}

// TestKillMidStreamRepeatedly kills the relay several times while writers
// commit, restarting it each time.
func TestKillMidStreamRepeatedly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	h.provision()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var txs [][]string
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150 && ctx.Err() == nil; i++ {
				ids, err := h.insertTx(ctx, 1+i%5, false)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				txs = append(txs, ids)
				mu.Unlock()
			}
		}()
	}
	h.killRounds(3, 100)
	wg.Wait()
	p := h.start()
	committed := h.committedIDs()
	h.waitCount(subjAB, len(committed), 60*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, txs, nil, false)
}

// TestNATSRestartMidStream restarts the JetStream server while events flow.
func TestNATSRestartMidStream(t *testing.T) {
	t.Parallel()
	n := testutil.StartNATS(t)
	h := newHarness(t, testutil.NewDatabase(t), n.URL())
	p := h.start()
	waitReplicating(t, p)
	ctx := context.Background()
	done := make(chan struct{})
	var txs [][]string
	go func() {
		defer close(done)
		for i := 0; i < 600; i++ {
			ids, err := h.insertTx(ctx, 3, false)
			if err != nil {
				t.Error(err)
				return
			}
			txs = append(txs, ids)
			if i == 200 {
				if err := n.Restart(); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	<-done
	committed := h.committedIDs()
	h.waitCount(subjAB, len(committed), 60*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, txs, nil, false)
	if strings.Count(p.Output(), "nats reconnected") == 0 {
		t.Fatalf("relay never saw the NATS restart:\n%s", testutil.Tail(p.Output(), 20))
	}
}

// TestPostgresRestartMidStream restarts Postgres (immediate, i.e. crash) while
// events flow.
func TestPostgresRestartMidStream(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, db := privatePostgres(t)
	h := newHarness(t, db, testutil.StartNATS(t).URL())
	p := h.start()
	waitReplicating(t, p)
	for i := 0; i < 100; i++ {
		if _, err := h.insertTx(ctx, 5, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := pg.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := h.insertTx(ctx, 5, false); err != nil {
			i-- // the pool hands out dead connections once after the restart
			continue
		}
	}
	committed := h.committedIDs()
	h.waitCount(subjAB, len(committed), 60*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, nil, nil, false)
	if !strings.Contains(p.Output(), "reconnecting") {
		t.Fatalf("relay never saw the restart:\n%s", testutil.Tail(p.Output(), 20))
	}
}

// TestStandbyTakesOver runs two relays on one slot: the second waits and takes
// over within seconds of the first being killed.
func TestStandbyTakesOver(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	addrA, addrB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	a := h.start("HTTP_ADDR=" + addrA)
	waitReplicating(t, a)
	b := h.start("HTTP_ADDR=" + addrB)
	testutil.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(b.Output(), "hot standby") {
			return fmt.Errorf("second relay not standing by:\n%s", testutil.Tail(b.Output(), 5))
		}
		return nil
	})
	if code, body := httpStatus("http://" + addrB + "/readyz"); code != 503 || !strings.Contains(body, "active for pid") {
		t.Fatalf("standby /readyz = %d %s, want 503 naming the holder pid", code, body)
	}
	if code, _ := httpStatus("http://" + addrA + "/readyz"); code != 200 {
		t.Fatalf("active /readyz = %d, want 200", code)
	}
	ctx := context.Background()
	for i := 0; i < 50; i++ {
		if _, err := h.insertTx(ctx, 4, false); err != nil {
			t.Fatal(err)
		}
	}
	a.Kill()
	killed := time.Now()
	testutil.Eventually(t, 15*time.Second, func() error {
		if code, _ := httpStatus("http://" + addrB + "/readyz"); code != 200 {
			return fmt.Errorf("standby not ready yet: %d", code)
		}
		return nil
	})
	t.Logf("standby took over %v after the kill", time.Since(killed).Round(time.Millisecond))
	for i := 0; i < 50; i++ {
		if _, err := h.insertTx(ctx, 4, false); err != nil {
			t.Fatal(err)
		}
	}
	committed := h.committedIDs()
	h.waitCount(subjAB, len(committed), 30*time.Second, b)
	h.checkExactlyOnce(subjAB, committed, nil, nil, false)
}

// TestBadRowsGoToDLQAndDoNotBlock: rows that cannot be published as asked are
// dead-lettered with the reason; the rows around them flow.
func TestBadRowsGoToDLQAndDoNotBlock(t *testing.T) {
	t.Parallel()
	for _, srv := range testutil.NATSServers() {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			testBadRowsGoToDLQAndDoNotBlock(t, newHarness(t, testutil.NewDatabase(t), srv.Start(t)))
		})
	}
}

func testBadRowsGoToDLQAndDoNotBlock(t *testing.T, h *harness) {
	p := h.start()
	waitReplicating(t, p)
	big := strings.Repeat("x", 1200*1024) // over the server's 1 MiB max payload
	execTx(t, h, []string{
		`INSERT INTO jetstream_outbox_events (resource_type, event_type, payload) VALUES ('ok', 'one', '{}')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload, subject)
  VALUES ('aaaaaaaa-0000-4000-8000-000000000001', 'bad', 'subject', '{}', 'has space.in it')`,
		`INSERT INTO jetstream_outbox_events (resource_type, event_type, payload) VALUES ('ok', 'two', '{}')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload)
  VALUES ('aaaaaaaa-0000-4000-8000-000000000002', 'bad', 'scalar', '"just a string"')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload, subject)
  VALUES ('aaaaaaaa-0000-4000-8000-000000000003', 'bad', 'wildcard', '{}', 'app_a.sync.>')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload)
  VALUES ('aaaaaaaa-0000-4000-8000-000000000004', 'bad', 'huge', jsonb_build_object('blob', $1::text))`,
		`INSERT INTO jetstream_outbox_events (resource_type, event_type, payload) VALUES ('ok', 'three', '{}')`,
	}, big)
	dlq := appA + ".sync.dlq"
	h.waitCount(subjAB, 3, 30*time.Second, p)
	h.waitCount(dlq, 4, 30*time.Second, p)
	got := map[string]string{}
	for _, m := range h.readStream(dlq) {
		hd := m.Headers()
		if hd.Get("Bridge-Error-Class") != "relay" || hd.Get("Bridge-Error") == "" || hd.Get("Bridge-Failed-At") == "" {
			t.Errorf("dead letter lacks failure headers: %v", hd)
		}
		var body map[string]any
		if err := json.Unmarshal(m.Data(), &body); err != nil {
			t.Errorf("dead letter body is not JSON: %v", err)
		}
		got[fmt.Sprint(body["event_id"])] = hd.Get("Bridge-Error")
	}
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("aaaaaaaa-0000-4000-8000-00000000000%d", i)
		if got[id] == "" {
			t.Errorf("row %s not dead-lettered with a reason; got %v", id, got)
		}
	}
}

// TestIdleOutboxDoesNotPinWAL: with the outbox idle and another table busy,
// the slot's confirmed position follows the server's WAL.
func TestIdleOutboxDoesNotPinWAL(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	p := h.start()
	waitReplicating(t, p)
	ctx := context.Background()
	if _, err := h.insertTx(ctx, 1, false); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 1, 20*time.Second, p)
	if _, err := h.pool.Exec(ctx, `CREATE TABLE busy (id bigserial primary key, v text);
		INSERT INTO busy (v) SELECT repeat('x', 200) FROM generate_series(1, 50000)`); err != nil {
		t.Fatal(err)
	}
	var target string
	h.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target)
	testutil.Eventually(t, 20*time.Second, func() error {
		var ok bool
		var confirmed string
		err := h.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn, confirmed_flush_lsn::text
			FROM pg_replication_slots WHERE slot_name = $1`, h.slot, target).Scan(&ok, &confirmed)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("confirmed %s, server at %s", confirmed, target)
		}
		return nil
	})
}

// TestGracefulShutdownConfirms: SIGTERM exits 0 after confirming everything
// published.
func TestGracefulShutdownConfirms(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	p := h.start("STATUS_INTERVAL=30s") // only the shutdown confirms
	waitReplicating(t, p)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if _, err := h.insertTx(ctx, 10, false); err != nil {
			t.Fatal(err)
		}
	}
	var after string
	h.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&after)
	h.waitCount(subjAB, 200, 20*time.Second, p)
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(20 * time.Second); err != nil {
		t.Fatalf("relay did not exit 0 on SIGTERM: %v\n%s", err, testutil.Tail(p.Output(), 10))
	}
	var ok bool
	if err := h.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
		h.slot, after).Scan(&ok); err != nil || !ok {
		t.Fatalf("slot not confirmed past the last published commit %s (err %v)", after, err)
	}
}

// TestBadConfigExitsBeforeConnecting: every bad variable is named.
func TestBadConfigExitsBeforeConnecting(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "relay")
	p := testutil.StartProcess(t, bin, []string{"DATABASE_URL=postgres://x@127.0.0.1:1/db", "APP_NAME=a b",
		"DESTINATION_APP=", "MAX_INFLIGHT=lots", "DUPLICATE_WINDOW=-5", "LOG_FORMAT=xml", "NATS_URLS=nats://127.0.0.1:1"})
	if err := p.Wait(10 * time.Second); err == nil {
		t.Fatal("relay accepted bad configuration")
	}
	out := p.Output()
	for _, v := range []string{"MAX_INFLIGHT", "DUPLICATE_WINDOW"} {
		if !strings.Contains(out, v) {
			t.Errorf("error does not name %s:\n%s", v, out)
		}
	}
	p2 := testutil.StartProcess(t, bin, []string{"DATABASE_URL=postgres://x:secret@127.0.0.1:1/db", "APP_NAME=a b",
		"DESTINATION_APP=", "LOG_FORMAT=xml", "NATS_URLS=nats://127.0.0.1:1", "BATCH_LINGER=1",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL=udp"})
	p2.Wait(10 * time.Second)
	out = p2.Output()
	for _, v := range []string{"APP_NAME", "DESTINATION_APP", "LOG_FORMAT", "BATCH_LINGER=1s", `OTEL_EXPORTER_OTLP_PROTOCOL="udp"`} {
		if !strings.Contains(out, v) {
			t.Errorf("error does not name %s:\n%s", v, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("password leaked into output:\n%s", out)
	}
}

// execTx runs statements in one transaction; arg is passed to those that use $1.
func execTx(t *testing.T, h *harness, stmts []string, arg any) {
	t.Helper()
	ctx := context.Background()
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, st := range stmts {
		var args []any
		if strings.Contains(st, "$1") {
			args = []any{arg}
		}
		if _, err := tx.Exec(ctx, st, args...); err != nil {
			t.Fatalf("%v: %s", err, st)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLostSlotStopsWithRecoveryAdvice: Postgres removes WAL a stopped relay's
// slot still needs (max_slot_wal_keep_size). With SLOT_RECOVERY=manual the
// relay refuses to run and says events may be missing and how to recover;
// started again with the default (auto) it recovers by itself: the rows
// committed before the slot was lost reach the stream.
func TestLostSlotStopsWithRecoveryAdvice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, db := privatePostgres(t)
	h := newHarness(t, db, testutil.StartNATS(t).URL())
	h.provision()
	if _, err := h.pool.Exec(ctx, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(ctx, "CREATE TABLE filler (v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.insertTx(ctx, 5, false); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, q := range []string{
			"INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 5000)",
			"SELECT pg_switch_wal()", "CHECKPOINT",
		} {
			if _, err := h.pool.Exec(ctx, q); err != nil {
				return err
			}
		}
		var status string
		h.pool.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", h.slot).Scan(&status)
		if status != "lost" {
			return fmt.Errorf("wal_status=%s", status)
		}
		return nil
	})
	p := h.start("SLOT_RECOVERY=manual")
	if err := p.Wait(30 * time.Second); err == nil {
		t.Fatal("relay ran on a lost slot")
	}
	out := p.Output()
	for _, want := range []string{"wal_status=lost", "may be missing", "pg_drop_replication_slot"} {
		if !strings.Contains(out, want) {
			t.Errorf("exit message lacks %q:\n%s", want, testutil.Tail(out, 5))
		}
	}
	auto := h.start()
	h.waitCount(subjAB, 5, 60*time.Second, auto)
	waitLogged(t, auto, `"reason":"lost"`)
}

// TestAutoProvisionKeepsARecordedSlotMissing: a slot the relay recorded is
// dropped while it is down, and rows are committed meanwhile. Started with
// AUTO_PROVISION=true, provisioning must not create the slot afresh (which
// would skip those rows without a word): the relay recovers it and
// republishes them.
func TestAutoProvisionKeepsARecordedSlotMissing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	ctx := context.Background()
	p := h.start("AUTO_PROVISION=true")
	waitReplicating(t, p)
	if _, err := h.insertTx(ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 3, 30*time.Second, p)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(30 * time.Second); err != nil {
		t.Fatalf("relay stop: %v", err)
	}
	testutil.Eventually(t, 30*time.Second, func() error { // the walsender may outlive the process a moment
		_, err := h.pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", h.slot)
		return err
	})
	if _, err := h.insertTx(ctx, 5, false); err != nil {
		t.Fatal(err)
	}
	p = h.start("AUTO_PROVISION=true")
	h.waitCount(subjAB, 8, 60*time.Second, p)
	waitLogged(t, p, `"reason":"missing"`)
}

// waitLogged waits until the process logged a replication slot recovery
// with this field.
func waitLogged(t *testing.T, p *testutil.Process, field string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		if out := p.Output(); !strings.Contains(out, "replication slot recovered") || !strings.Contains(out, field) {
			return fmt.Errorf("no recovery logged with %s:\n%s", field, testutil.Tail(out, 5))
		}
		return nil
	})
}

// TestBackfillRowsOlderThanTheSlot: rows committed before the slot existed are
// reported at start and published by `relay backfill`, once even when run twice.
func TestBackfillRowsOlderThanTheSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	ctx := context.Background()
	sql, err := migrations.Outbox(migrations.Names{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	early, err := h.insertTx(ctx, 50, false)
	if err != nil {
		t.Fatal(err)
	}
	p := h.start()
	waitReplicating(t, p)
	if !strings.Contains(p.Output(), "relay backfill") {
		t.Fatalf("no warning about rows older than the slot:\n%s", testutil.Tail(p.Output(), 5))
	}
	late, err := h.insertTx(ctx, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 10, 20*time.Second, p)
	for run := 0; run < 2; run++ {
		b := testutil.StartProcess(t, h.bin, h.env, "backfill", "--since", "all")
		if err := b.Wait(60 * time.Second); err != nil {
			t.Fatalf("backfill: %v\n%s", err, b.Output())
		}
		if !strings.Contains(b.Output(), "60 rows republished") {
			t.Fatalf("backfill output: %s", testutil.Tail(b.Output(), 3))
		}
	}
	h.checkExactlyOnce(subjAB, append(early, late...), [][]string{early}, nil, false)
}

// TestPublicationWithoutOutboxRefused: a relay whose publication does not
// carry the outbox would stream nothing, silently; it must refuse to run.
func TestPublicationWithoutOutboxRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	h.provision()
	if _, err := h.pool.Exec(context.Background(), "ALTER PUBLICATION jetstream_bridge_outbox DROP TABLE jetstream_outbox_events"); err != nil {
		t.Fatal(err)
	}
	p := h.start("AUTO_PROVISION=false")
	if err := p.Wait(30 * time.Second); err == nil {
		t.Fatal("relay ran with a publication that does not include the outbox")
	}
	if out := p.Output(); !strings.Contains(out, "ALTER PUBLICATION jetstream_bridge_outbox ADD TABLE") {
		t.Fatalf("exit message does not say how to fix it:\n%s", testutil.Tail(out, 3))
	}
}

// TestOutboxRetentionPrunes: rows older than OUTBOX_RETENTION are deleted in
// batches after they were published; newer rows stay.
func TestOutboxRetentionPrunes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	p := h.start("OUTBOX_RETENTION=1h", "OUTBOX_PRUNE_INTERVAL=1s")
	waitReplicating(t, p)
	ctx := context.Background()
	if _, err := h.pool.Exec(ctx, `INSERT INTO jetstream_outbox_events (resource_type, event_type, payload, occurred_at)
		SELECT 'old', 'created', '{}', now() - interval '2 hours' FROM generate_series(1, 2500)`); err != nil {
		t.Fatal(err)
	}
	if _, err := h.insertTx(ctx, 10, false); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 2510, 30*time.Second, p)
	testutil.Eventually(t, 90*time.Second, func() error {
		var old, recent int
		h.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE resource_type = 'old'), count(*) FILTER (WHERE resource_type <> 'old') FROM jetstream_outbox_events").Scan(&old, &recent)
		if old != 0 || recent != 10 {
			return fmt.Errorf("old rows left %d, recent %d (want 0 and 10)", old, recent)
		}
		return nil
	})
}

// TestNetworkPartitionToPostgres: the replication connection goes silent
// (packets dropped, sockets open); the relay notices, reconnects once the
// network heals, and nothing is lost.
func TestNetworkPartitionToPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, db := privatePostgres(t)
	admin := newHarness(t, db, testutil.StartNATS(t).URL())
	// The server drops its side of a dead walsender after wal_sender_timeout.
	for _, q := range []string{"ALTER SYSTEM SET wal_sender_timeout = '3s'", "SELECT pg_reload_conf()"} {
		if _, err := admin.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	h, proxy := admin.throughProxy(pg)
	h.env = append(h.env, "REPLICATION_TIMEOUT=3s")
	p := h.start()
	waitReplicating(t, p)
	if _, err := admin.insertTx(ctx, 5, false); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 5, 20*time.Second, p)

	proxy.Blackhole(true)
	if _, err := admin.insertTx(ctx, 5, false); err != nil { // committed during the partition
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(p.Output(), "no message from the server") {
			return fmt.Errorf("relay has not noticed the silence")
		}
		return nil
	})
	proxy.Blackhole(false)
	proxy.CloseConns()
	if _, err := admin.insertTx(ctx, 5, false); err != nil {
		t.Fatal(err)
	}
	committed := admin.committedIDs()
	h.waitCount(subjAB, len(committed), 60*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, nil, nil, false)
}

// TestNullsInALooseOutboxAreDeadLettered: an outbox table created by hand
// without the NOT NULL constraints; rows with NULL where a value is expected
// are dead-lettered with the reason and the rows after them flow.
func TestNullsInALooseOutboxAreDeadLettered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	ctx := context.Background()
	if _, err := h.pool.Exec(ctx, `CREATE TABLE public.loose_outbox (
		id bigserial PRIMARY KEY, event_id uuid, resource_type text, resource_id text, event_type text,
		payload jsonb, headers jsonb, subject text, destination text, trace_id text, occurred_at timestamptz,
		extra_column int)`); err != nil {
		t.Fatal(err)
	}
	p := h.start("OUTBOX_TABLE=public.loose_outbox", "PUBLICATION=loose_pub")
	waitReplicating(t, p)
	execTx(t, h, []string{
		`INSERT INTO loose_outbox (event_id, resource_type, event_type, payload, occurred_at) VALUES (gen_random_uuid(), 'ok', 'one', '{}', now())`,
		`INSERT INTO loose_outbox (event_id, resource_type, event_type, payload, occurred_at) VALUES ('bbbbbbbb-0000-4000-8000-000000000001', 'bad', NULL, '{}', now())`,
		`INSERT INTO loose_outbox (event_id, resource_type, event_type, payload, occurred_at) VALUES ('bbbbbbbb-0000-4000-8000-000000000002', 'bad', 'nullpayload', NULL, now())`,
		`INSERT INTO loose_outbox (event_id, resource_type, event_type, payload, occurred_at) VALUES (NULL, 'bad', 'noid', '{}', now())`,
		`INSERT INTO loose_outbox (event_id, resource_type, event_type, payload, occurred_at) VALUES ('bbbbbbbb-0000-4000-8000-000000000003', 'bad', 'notime', '{}', NULL)`,
		`INSERT INTO loose_outbox (event_id, resource_type, event_type, payload, occurred_at, extra_column) VALUES (gen_random_uuid(), 'ok', 'two', '{"a":1}', now(), 7)`,
	}, nil)
	dlq := appA + ".sync.dlq"
	h.waitCount(subjAB, 2, 30*time.Second, p)
	h.waitCount(dlq, 4, 30*time.Second, p)
	for _, m := range h.readStream(dlq) {
		if m.Headers().Get("Bridge-Error-Class") != "relay" || m.Headers().Get("Bridge-Error") == "" || m.Headers().Get("Nats-Msg-Id") == "" {
			t.Errorf("dead letter without class, reason or id: %v %s", m.Headers(), m.Data())
		}
	}
}

// TestPostgresDownAtStartIsWaitedFor: with AUTO_PROVISION=false the relay
// first reads the outbox table's columns; Postgres being unreachable then (a
// restart or a failover under a starting relay) is waited out with backoff,
// not an exit.
func TestPostgresDownAtStartIsWaitedFor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg, db := privatePostgres(t)
	admin := newHarness(t, db, testutil.StartNATS(t).URL())
	admin.provision()
	h, proxy := admin.throughProxy(pg)
	proxy.Down()
	h.env = append(h.env, "AUTO_PROVISION=false")
	p := h.start()
	testutil.Eventually(t, 20*time.Second, func() error {
		select {
		case <-p.Done():
			return fmt.Errorf("relay exited while Postgres was down: %s", p.Output())
		default:
		}
		if strings.Count(p.Output(), "retrying") < 2 {
			return errors.New("relay has not retried twice yet")
		}
		return nil
	})
	proxy.Up()
	waitReplicating(t, p)
	if _, err := admin.insertTx(ctx, 5, false); err != nil {
		t.Fatal(err)
	}
	committed := admin.committedIDs()
	h.waitCount(subjAB, len(committed), 30*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, nil, nil, false)
}
