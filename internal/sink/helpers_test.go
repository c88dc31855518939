package sink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// The layout of every test: app "orders" consumes what "billing" publishes.
const (
	streamName = "jetstream-bridge-stream"
	durable    = "orders-workers"
	filter     = "billing.sync.orders"
	dlqSubject = "orders.sync.dlq"
)

// env is a fresh database with the inbox schema and an effects table, an
// embedded JetStream with the stream and the sink's consumer.
type env struct {
	url     string
	pool    *pgxpool.Pool
	nc      *nats.Conn
	js      jetstream.JetStream
	cons    jetstream.Consumer // the pull consumer, when it is one
	info    func() (*jetstream.ConsumerInfo, error)
	builder envelope.Builder
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, testutil.StartNATS(t).URL())
}

// newEnvOn is newEnv on a given NATS server, connecting with opts.
func newEnvOn(t testing.TB, natsURL string, opts ...nats.Option) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &env{url: testutil.NewDatabase(t)}
	var err error
	if e.pool, err = pgxpool.New(ctx, e.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pool.Close)
	inboxSQL, err := migrations.Inbox(migrations.Names{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := provision.Apply(ctx, conn, inboxSQL,
		`CREATE TABLE effects (seq bigserial PRIMARY KEY, event_id text NOT NULL, note text)`); err != nil {
		t.Fatal(err)
	}

	if e.nc, err = nats.Connect(natsURL, opts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	if _, err := provision.EnsureStream(ctx, e.js, provision.StreamSpec{Name: streamName, Subjects: []string{filter, dlqSubject}}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	e.ensureConsumer(t, consumerSpec())
	e.builder = envelope.Builder{Producer: "billing", Subjects: envelope.Subjects{App: "billing", Dest: "orders"}}
	return e
}

// applyPartitions creates the partition tables, then runs extra statements.
func (e *env) applyPartitions(t testing.TB, extra ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema, err := migrations.Partitions(migrations.Names{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := provision.Apply(ctx, conn, append([]string{schema}, extra...)...); err != nil {
		t.Fatal(err)
	}
}

// ensureConsumer provisions spec and binds e.cons to it, for consumer info.
func (e *env) ensureConsumer(t testing.TB, spec provision.ConsumerSpec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := provision.EnsureConsumer(ctx, e.js, spec, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	info, err := provision.ConsumerInfo(ctx, e.js, spec.Stream, spec.Durable, spec.DeliverSubject != "")
	if err != nil {
		t.Fatal(err)
	}
	e.info = func() (*jetstream.ConsumerInfo, error) {
		return provision.ConsumerInfo(context.Background(), e.js, spec.Stream, spec.Durable, spec.DeliverSubject != "")
	}
	if info.Config.DeliverSubject == "" {
		if e.cons, err = sink.BindConsumer(ctx, e.js, spec.Stream, spec.Durable); err != nil {
			t.Fatal(err)
		}
	}
}

func consumerSpec() provision.ConsumerSpec {
	return provision.ConsumerSpec{Stream: streamName, Durable: durable, Filter: filter, AckWait: 30 * time.Second,
		MaxDeliver: 5, Backoff: sink.DefaultBackoff(), MaxAckPending: 1000}
}

// event builds a message the way the relay does. pos may be zero (no
// position headers, like the Ruby gem's messages).
func (e *env) event(t *testing.T, id, resourceType, resourceID string, pos envelope.Position) envelope.Message {
	t.Helper()
	m, err := e.builder.Build(&envelope.Row{
		EventID: id, ResourceType: resourceType, ResourceID: resourceID, EventType: resourceType + ".updated",
		Payload: []byte(`{"n":1}`), Headers: []byte(`{"x-test":"yes"}`), OccurredAt: "2026-01-02 03:04:05.123456+00",
	}, pos)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *env) publish(t *testing.T, m envelope.Message) *jetstream.PubAck {
	t.Helper()
	return e.publishRaw(t, m.Subject, m.Body, m.Header)
}

func (e *env) publishRaw(t *testing.T, subject string, body []byte, h nats.Header) *jetstream.PubAck {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body, Header: h})
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

// run starts a sink with test defaults, changed by opt; it is stopped when
// the test ends. It returns the observer and a stop function that cancels
// and returns Run's error.
func (e *env) run(t testing.TB, h sink.Handler, opt func(*sink.Options)) (*counter, func() error) {
	t.Helper()
	obs := &counter{m: map[sink.Result]int{}}
	o := sink.Options{
		DB: e.pool, JS: e.js, Source: sink.JetStreamPull(e.cons), Handler: h,
		DLQSubject: dlqSubject, UseDLQ: true,
		MaxDeliver: 5, Backoff: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond},
		Concurrency: 4, BatchSize: 10, FetchWait: 200 * time.Millisecond, ShutdownTimeout: 10 * time.Second,
		Observer: obs, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}
	if opt != nil {
		opt(&o)
	}
	s, err := sink.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("sink did not stop within 30s")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("sink run: %v", err)
		}
	})
	return obs, stop
}

// counter is an Observer that counts results.
type counter struct {
	mu sync.Mutex
	m  map[sink.Result]int
}

func (c *counter) Result(r sink.Result) {
	c.mu.Lock()
	c.m[r]++
	c.mu.Unlock()
}

func (c *counter) HandlerDone(time.Duration, error) {}

func (c *counter) get(r sink.Result) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[r]
}

// waitFor waits until the observer has counted at least want of each result.
func (c *counter) waitFor(t *testing.T, want map[sink.Result]int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		for r, n := range want {
			if got := c.get(r); got < n {
				return fmt.Errorf("%s=%d, want %d (all: %v)", r, got, n, c.snapshot())
			}
		}
		return nil
	})
}

func (c *counter) snapshot() map[sink.Result]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[sink.Result]int{}
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// effectHandler records each applied event in the effects table, inside the
// inbox transaction, after calling before (which may fail the attempt).
// calls logs every call in order.
type effectHandler struct {
	mu     sync.Mutex
	calls  []string // event ids, one per call
	before func(ev *sink.Event, call int) error
}

func (h *effectHandler) Handle(ctx context.Context, tx pgx.Tx, ev *sink.Event) error {
	h.mu.Lock()
	h.calls = append(h.calls, ev.Envelope.EventID)
	n := 0
	for _, id := range h.calls {
		if id == ev.Envelope.EventID {
			n++
		}
	}
	h.mu.Unlock()
	if h.before != nil {
		if err := h.before(ev, n); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, `INSERT INTO effects (event_id) VALUES ($1)`, ev.Envelope.EventID)
	return err
}

func (h *effectHandler) callLog() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func (h *effectHandler) callsOf(id string) int {
	n := 0
	for _, c := range h.callLog() {
		if c == id {
			n++
		}
	}
	return n
}

// effects returns the applied event ids in commit order.
func (e *env) effects(t *testing.T) []string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT event_id FROM effects ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func count(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// inboxRow is what tests check of an inbox row.
type inboxRow struct {
	Status       string
	Attempts     int
	Error        string
	Deliveries   int
	StreamSeq    *int64
	CommitLSN    *string
	TxIndex      *int
	ProcessedSet bool
}

func (e *env) inbox(t *testing.T, id string) *inboxRow {
	t.Helper()
	var r inboxRow
	err := e.pool.QueryRow(context.Background(), `
		SELECT status, processing_attempts, coalesce(error_message, ''), deliveries, stream_seq, commit_lsn::text, tx_index,
		       processed_at IS NOT NULL
		FROM jetstream_inbox_events WHERE event_id = $1`, id).
		Scan(&r.Status, &r.Attempts, &r.Error, &r.Deliveries, &r.StreamSeq, &r.CommitLSN, &r.TxIndex, &r.ProcessedSet)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return &r
}

// deadLetters reads the DLQ subject.
func (e *env) deadLetters(t *testing.T) []*sink.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*sink.DeadLetter
	if err := sink.ListDLQ(ctx, e.js, streamName, dlqSubject, func(dl *sink.DeadLetter) error {
		out = append(out, dl)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitSettled waits until the consumer has nothing pending or unacked.
func (e *env) waitSettled(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		info, err := e.info()
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("consumer: %d pending, %d awaiting ack", info.NumPending, info.NumAckPending)
		}
		return nil
	})
}

func pos(lsn string, idx int) envelope.Position {
	l, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		panic(err)
	}
	return envelope.Position{CommitLSN: l, TxIndex: idx}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// logTap is a log destination that keeps every line and passes it on to
// the test log, so that a test can wait on what the sink reported.
type logTap struct {
	mu    sync.Mutex
	lines []string
	t     testing.TB
}

func (l *logTap) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(p))
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// count returns how many lines contain sub.
func (l *logTap) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}
