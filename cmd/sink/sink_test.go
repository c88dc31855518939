package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/jackc/pglogrepl"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// world is a database with an effects table and a SQL handler, an embedded
// JetStream, and the sink binary.
type world struct {
	db      string
	conn    *pgx.Conn
	nats    string
	nc      *nats.Conn
	js      jetstream.JetStream
	bin     string
	builder envelope.Builder
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldOn(t, testutil.StartNATS(t).URL())
}

// newWorldOn is newWorld on a given NATS server, the test connecting with opts.
func newWorldOn(t *testing.T, natsURL string, opts ...nats.Option) *world {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := &world{bin: testutil.BuildBinary(t, "sink"), db: testutil.NewDatabase(t)}
	var err error
	if w.conn, err = pgx.Connect(ctx, w.db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.conn.Close(context.Background()) })
	if _, err := w.conn.Exec(ctx, `
		CREATE TABLE effects (seq bigserial PRIMARY KEY, event_id text NOT NULL);
		CREATE PROCEDURE public.apply_event(e jsonb) LANGUAGE plpgsql AS $$
		BEGIN
			-- Blocks while a test holds advisory lock 7, so it can act while a handler runs.
			PERFORM pg_advisory_xact_lock_shared(7);
			INSERT INTO effects (event_id) VALUES (e->>'event_id');
		END $$`); err != nil {
		t.Fatal(err)
	}
	w.nats = natsURL
	if w.nc, err = nats.Connect(w.nats, opts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.nc.Close)
	w.js, _ = jetstream.New(w.nc)
	w.builder = envelope.Builder{Producer: "billing", Subjects: envelope.Subjects{App: "billing", Dest: "orders"}}
	return w
}

// env is the sink's environment; later entries of extra win.
func (w *world) env(extra ...string) []string {
	return append([]string{
		"DATABASE_URL=" + w.db, "NATS_URLS=" + w.nats, "APP_NAME=orders", "DESTINATION_APP=billing",
		"HANDLER=sql:public.apply_event", "LOG_LEVEL=info", "ACK_WAIT=1s", "BACKOFF=1s", "SHUTDOWN_TIMEOUT=20s",
		"HTTP_ADDR=", "ENV_NAME=", "FILTER_SUBJECT=", "ROUTES_FILE=",
	}, extra...)
}

func (w *world) start(t *testing.T, extra ...string) *testutil.Process {
	t.Helper()
	return testutil.StartProcess(t, w.bin, w.env(extra...))
}

// runCmd runs a subcommand to its end and returns its output.
func (w *world) runCmd(t *testing.T, args []string, extra ...string) (string, error) {
	t.Helper()
	p := testutil.StartProcess(t, w.bin, w.env(extra...), args...)
	err := p.Wait(time.Minute)
	return p.Output(), err
}

func (w *world) publish(t *testing.T, ctx context.Context, id, resourceID string, lsn string, idx int) {
	t.Helper()
	commit, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		t.Fatal(err)
	}
	m, err := w.builder.Build(&envelope.Row{EventID: id, ResourceType: "user", ResourceID: resourceID, EventType: "user.updated",
		Payload: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05+00"}, envelope.Position{CommitLSN: commit, TxIndex: idx})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header}); err != nil {
		t.Fatal(err)
	}
}

func (w *world) effects(t *testing.T) (total, distinct int) {
	t.Helper()
	if err := w.conn.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT event_id) FROM effects`).Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	return total, distinct
}

func (w *world) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := w.js.Consumer(context.Background(), "jetstream-bridge-stream", "orders-workers")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// waitConsumer waits until a sink has provisioned the stream and consumer.
func (w *world) waitConsumer(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := w.js.Consumer(context.Background(), "jetstream-bridge-stream", "orders-workers")
		return err
	})
}

// waitHandlerBlocked waits until n sink backends wait on advisory lock 7.
func (w *world) waitHandlerBlocked(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		var waiting int
		if err := w.conn.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7 AND NOT granted`).Scan(&waiting); err != nil {
			return err
		}
		if waiting < n {
			return fmt.Errorf("%d handlers waiting on the test's lock, want %d", waiting, n)
		}
		return nil
	})
}

func (w *world) lock(t *testing.T) (unlock func()) {
	t.Helper()
	if _, err := w.conn.Exec(context.Background(), `SELECT pg_advisory_lock(7)`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := w.conn.Exec(context.Background(), `SELECT pg_advisory_unlock(7)`); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBinary_RefusesInjectedHandlerBeforeConnecting(t *testing.T) {
	bin := testutil.BuildBinary(t, "sink")
	for _, h := range []string{"sql:public.x; drop table y", `sql:public."x"`, "sql:public.x'--"} {
		p := testutil.StartProcess(t, bin, []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/none",
			"NATS_URLS=nats://127.0.0.1:1", "APP_NAME=orders", "DESTINATION_APP=billing", "HANDLER=" + h, "ROUTES_FILE="})
		var exitErr *exec.ExitError
		if err := p.Wait(20 * time.Second); !errors.As(err, &exitErr) || p.ExitCode() != 2 {
			t.Fatalf("HANDLER=%q: %v, want exit status 2 (configuration error)", h, err)
		}
		if out := p.Output(); !strings.Contains(out, "HANDLER=") || strings.Contains(out, "connect") {
			t.Fatalf("HANDLER=%q output:\n%s", h, out)
		}
	}
}

// TestBinary_KillAfterCommitBeforeAck: the sink commits the event, its ack
// never reaches JetStream (a proxy drops it), and it is killed. The restarted
// sink gets the redelivery and acks it without running the handler again.
func TestBinary_KillAfterCommitBeforeAck(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	proxy := startProxy(t, strings.TrimPrefix(w.nats, "nats://"))

	unlock := w.lock(t)
	first := w.start(t, "NATS_URLS=nats://"+proxy.addr)
	w.waitConsumer(t)
	w.publish(t, ctx, "e1", "1", "0/10", 0)
	w.waitHandlerBlocked(t, 1) // delivered, handler running inside the inbox transaction
	proxy.dropUpstream.Store(true)
	unlock() // handler finishes, the transaction commits, the ack is dropped
	testutil.Eventually(t, 20*time.Second, func() error {
		var status string
		err := w.conn.QueryRow(ctx, `SELECT status FROM jetstream_inbox_events WHERE event_id = 'e1'`).Scan(&status)
		if err != nil || status != "processed" {
			return fmt.Errorf("inbox e1: %q %v", status, err)
		}
		return nil
	})
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Wait(10 * time.Second)
	if info := w.consumerInfo(t); info.AckFloor.Stream != 0 {
		t.Fatalf("ack floor %d: the ack got through, the test proves nothing", info.AckFloor.Stream)
	}

	second := w.start(t, "LOG_LEVEL=debug")
	testutil.Eventually(t, 30*time.Second, func() error {
		info := w.consumerInfo(t)
		if info.AckFloor.Stream < 1 || info.NumAckPending != 0 {
			return fmt.Errorf("ack floor %d, %d awaiting ack", info.AckFloor.Stream, info.NumAckPending)
		}
		return nil
	})
	if total, _ := w.effects(t); total != 1 {
		t.Fatalf("%d effects, want 1", total)
	}
	if !strings.Contains(second.Output(), "duplicate acked without running the handler") {
		t.Fatalf("the restarted sink did not see the redelivery as a duplicate:\n%s", second.Output())
	}
	if info := w.consumerInfo(t); info.Delivered.Consumer < 2 {
		t.Fatalf("delivered %d times, want the redelivery", info.Delivered.Consumer)
	}
	second.Signal(syscall.SIGTERM)
	if err := second.Wait(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// TestBinary_TwoProcessesExactlyOnce: two sinks on one durable, one of them
// killed and restarted midway; every event has exactly one effect, on the
// embedded server and on the oldest supported nats-server.
func TestBinary_TwoProcessesExactlyOnce(t *testing.T) {
	for _, srv := range testutil.NATSServers() {
		t.Run(srv.Name, func(t *testing.T) { testTwoProcessesExactlyOnce(t, newWorldOn(t, srv.Start(t))) })
	}
}

func testTwoProcessesExactlyOnce(t *testing.T, w *world) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const events, keys = 3000, 300
	extra := []string{"CONCURRENCY=4", "BATCH_SIZE=50", "ACK_WAIT=2s", "BACKOFF=2s"}
	a := w.start(t, extra...)
	b := w.start(t, extra...)

	w.waitConsumer(t) // both provision at once
	var futures []jetstream.PubAckFuture
	for i := range events {
		m, err := w.builder.Build(&envelope.Row{EventID: "ev-" + strconv.Itoa(i), ResourceType: "user",
			ResourceID: strconv.Itoa(i % keys), EventType: "user.updated", Payload: []byte(`{}`),
			OccurredAt: "2026-01-02 03:04:05+00"}, envelope.Position{CommitLSN: pglogrepl.LSN(16 + i/10), TxIndex: i % 10})
		if err != nil {
			t.Fatal(err)
		}
		f, err := w.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("publish timed out")
		}
	}

	testutil.Eventually(t, time.Minute, func() error {
		if _, distinct := w.effects(t); distinct < events/3 {
			return fmt.Errorf("%d applied", distinct)
		}
		return nil
	})
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	a.Wait(10 * time.Second)
	a2 := w.start(t, extra...)

	testutil.Eventually(t, 90*time.Second, func() error {
		if _, distinct := w.effects(t); distinct < events {
			return fmt.Errorf("%d of %d applied", distinct, events)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		if info := w.consumerInfo(t); info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("%d pending, %d awaiting ack", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	total, distinct := w.effects(t)
	if total != events || distinct != events {
		t.Fatalf("%d effects for %d distinct events, want exactly %d", total, distinct, events)
	}
	var processed int
	if err := w.conn.QueryRow(ctx, `SELECT count(*) FROM jetstream_inbox_events WHERE status = 'processed'`).Scan(&processed); err != nil {
		t.Fatal(err)
	}
	if processed != events {
		t.Fatalf("%d inbox rows processed, want %d", processed, events)
	}
	for _, p := range []*testutil.Process{b, a2} {
		p.Signal(syscall.SIGTERM)
		if err := p.Wait(30 * time.Second); err != nil {
			t.Fatalf("SIGTERM: %v\n%s", err, p.Output())
		}
	}
}

// TestBinary_SIGTERMFinishesInFlight: SIGTERM while a handler runs; the
// sink waits for it, commits, acks and exits 0. Also covers provision,
// readiness, metrics, status and the DLQ commands, on the embedded server
// and on the oldest supported nats-server.
func TestBinary_SIGTERMFinishesInFlight(t *testing.T) {
	for _, srv := range testutil.NATSServers() {
		t.Run(srv.Name, func(t *testing.T) { testSIGTERMFinishesInFlight(t, newWorldOn(t, srv.Start(t))) })
	}
}

func testSIGTERMFinishesInFlight(t *testing.T, w *world) {
	ctx := context.Background()
	out, err := w.runCmd(t, []string{"provision"})
	if err != nil || !strings.Contains(out, "provisioned") {
		t.Fatalf("sink provision: %v\n%s", err, out)
	}
	addr := testutil.FreeAddr(t)
	w.publish(t, ctx, "poison-neighbour", "2", "0/10", 0)
	if _, err := w.js.Publish(ctx, "billing.sync.orders", []byte("{not json"), jetstream.WithMsgID("bad-1")); err != nil {
		t.Fatal(err)
	}
	p := w.start(t, "HTTP_ADDR="+addr, "AUTO_PROVISION=false")
	testutil.Eventually(t, 30*time.Second, func() error {
		m := scrape(addr, "/metrics")
		if !strings.Contains(m, `jetstream_bridge_sink_events_total{result="applied"} 1`) ||
			!strings.Contains(m, `jetstream_bridge_sink_events_total{result="dead"} 1`) {
			return fmt.Errorf("metrics so far:\n%s", grep(m, "jetstream_bridge_sink"))
		}
		if r := scrape(addr, "/readyz"); !strings.Contains(r, `"status":"ready"`) {
			return fmt.Errorf("readyz: %s", r)
		}
		return nil
	})
	m := scrape(addr, "/metrics")
	for _, name := range []string{"jetstream_bridge_sink_handler_seconds_bucket", "jetstream_bridge_sink_consumer_pending"} {
		if !strings.Contains(m, name) {
			t.Fatalf("metrics lack %s", name)
		}
	}

	unlock := w.lock(t)
	w.publish(t, ctx, "inflight", "1", "0/20", 0)
	w.waitHandlerBlocked(t, 1)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(300 * time.Millisecond); !errors.Is(err, testutil.ErrStillRunning) {
		t.Fatalf("sink exited (%v) with a handler in flight", err)
	}
	unlock()
	if err := p.Wait(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", err, p.Output())
	}
	if total, distinct := w.effects(t); total != 2 || distinct != 2 {
		t.Fatalf("effects %d (%d distinct), want the in-flight event applied too", total, distinct)
	}
	if info := w.consumerInfo(t); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("after shutdown: %d awaiting ack, %d pending; want the in-flight event acked", info.NumAckPending, info.NumPending)
	}

	out, err = w.runCmd(t, []string{"status", "--json"})
	if err != nil {
		t.Fatalf("sink status: %v\n%s", err, out)
	}
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status output: %v\n%s", err, out)
	}
	if st.Consumer == nil || st.Consumer.NumPending != 0 || st.Consumer.NumAckPending != 0 || st.Consumer.AckFloorStream == 0 ||
		st.Inbox["processed"] != 2 || st.Inbox["dead"] != 1 {
		t.Fatalf("status: %s", out)
	}

	out, err = w.runCmd(t, []string{"dlq", "list", "--json"})
	if err != nil || !strings.Contains(out, `"class":"poison"`) || !strings.Contains(out, `"event_id":"bad-1"`) {
		t.Fatalf("sink dlq list: %v\n%s", err, out)
	}
	out, err = w.runCmd(t, []string{"dlq", "replay", "--class", "poison", "--dry-run"})
	if err != nil || !strings.Contains(out, "would replay") || !strings.Contains(out, "replay-bad-1-") {
		t.Fatalf("sink dlq replay --dry-run: %v\n%s", err, out)
	}
	if out, err := w.runCmd(t, []string{"dlq", "replay"}); err == nil {
		t.Fatalf("dlq replay without a selection succeeded:\n%s", out)
	}

	// AUTO_PROVISION=false never creates anything: another durable is missing.
	out, err = w.runCmd(t, nil, "AUTO_PROVISION=false", "DURABLE_NAME=nobody")
	if err == nil || !strings.Contains(out, "sink provision") {
		t.Fatalf("bind to a missing consumer: %v\n%s", err, out)
	}
}

func scrape(addr, path string) string {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// proxy forwards TCP to NATS; with dropUpstream set it swallows what the
// client sends (acks included) while still passing what the server sends.
type proxy struct {
	addr         string
	dropUpstream atomic.Bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Go(func() {
				io.Copy(c, u)
				c.Close()
			})
			wg.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 && !p.dropUpstream.Load() {
						if _, werr := u.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				u.Close()
			})
		}
	})
	return p
}
