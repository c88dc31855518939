package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const (
	table   = "public.jetstream_outbox_events"
	pubName = "jetstream_bridge_outbox"
	subject = "app_a.sync.app_b"
	dlq     = "app_a.sync.dlq"
)

// counts is the Observer of a test relay.
type counts struct {
	published, deadLettered, retried atomic.Int64
	recoveries, recoveredRows        atomic.Int64
	fenceDropped                     atomic.Int64
}

func (c *counts) FenceWait(time.Duration) {}
func (c *counts) FenceDropped()           { c.fenceDropped.Add(1) }

func (c *counts) Published(bool)            { c.published.Add(1) }
func (c *counts) CommitToAck(time.Duration) {}
func (c *counts) DeadLettered()             { c.deadLettered.Add(1) }
func (c *counts) Retried()                  { c.retried.Add(1) }
func (c *counts) Slot(*cdc.SlotInfo)        {}
func (c *counts) SlotRecovered(_ string, rows int64) {
	c.recoveries.Add(1)
	c.recoveredRows.Add(rows)
}

// world is one relay in process: a fresh database with the outbox and a
// slot, an embedded JetStream with the relay's stream.
type world struct {
	t    *testing.T
	pool *pgxpool.Pool
	js   jetstream.JetStream
	opts relay.Options
	obs  *counts
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldAt(t, testutil.NewDatabase(t))
}

// newWorldAt is newWorld on the database at dbURL.
func newWorldAt(t *testing.T, dbURL string) *world {
	t.Helper()
	ctx := context.Background()
	if err := provision.Outbox(ctx, dbURL, migrations.Names{Outbox: table, Publication: pubName}); err != nil {
		t.Fatal(err)
	}
	slot := fmt.Sprintf("relay_lib_%d", time.Now().UnixNano()%1e9)
	if _, err := provision.CreateSlot(ctx, dbURL, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), dbURL); err == nil {
			c.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", slot) //nolint:errcheck // best effort
			c.Close(context.Background())
		}
	})
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	nc, err := nats.Connect(testutil.StartNATS(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, publish.JetStreamOptions(256, 5*time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "jsb", Subjects: []string{"app_a.sync.>"},
		Duplicates: time.Minute, AllowBatchPublish: true}); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, pool: pool, js: js, obs: &counts{}}
	w.opts = relay.Options{
		DB: pool, ConnString: dbURL, NC: nc, JS: js,
		Slot: slot, Publication: pubName, OutboxTable: table,
		Producer: "app_a", Subjects: envelope.Subjects{App: "app_a", Dest: "app_b"}, MaxPayload: 8 << 10,
		Stream: "jsb", StreamSubjects: []string{"app_a.sync.>"}, Manage: true,
		UseDLQ: true, FastBatch: true, MaxInflight: 256, AckTimeout: 5 * time.Second,
		StatusInterval: 50 * time.Millisecond, ShutdownTimeout: 10 * time.Second, SlotCheck: time.Second, SlotLagWarn: 1 << 30,
		Observer: w.obs, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}
	return w
}

// run runs the relay until the test ends, and returns a function that stops
// it and returns Run's error.
func (w *world) run() (stop func() error) {
	w.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r := relay.New(w.opts)
	go func() { done <- r.Run(ctx) }()
	testutil.Eventually(w.t, 30*time.Second, func() error {
		if !r.State().Replicating {
			return errors.New("not replicating yet")
		}
		return nil
	})
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			w.t.Fatal("relay did not stop within 30s")
			return nil
		}
	}
	w.t.Cleanup(func() { stop() })
	return stop
}

// insert commits rows (column lists and values) in one transaction and
// returns the WAL position after the commit.
func (w *world) insert(stmts ...string) string {
	w.t.Helper()
	ctx := context.Background()
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" "+s); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		w.t.Fatal(err)
	}
	var lsn string
	if err := w.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		w.t.Fatal(err)
	}
	return lsn
}

// messages returns the stream's messages on subj, in stream order.
func (w *world) messages(subj string) []jetstream.RawStreamMsg {
	w.t.Helper()
	ctx := context.Background()
	s, err := w.js.Stream(ctx, "jsb")
	if err != nil {
		w.t.Fatal(err)
	}
	var out []jetstream.RawStreamMsg
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			info, ierr := s.Info(ctx)
			if ierr != nil {
				w.t.Fatal(ierr)
			}
			if seq >= info.State.LastSeq {
				return out
			}
			continue
		}
		if err != nil {
			w.t.Fatal(err)
		}
		if m.Subject == subj {
			out = append(out, *m)
		}
	}
}

// waitMessages waits until subj holds n messages.
func (w *world) waitMessages(subj string, n int, timeout time.Duration) []jetstream.RawStreamMsg {
	w.t.Helper()
	var got []jetstream.RawStreamMsg
	testutil.Eventually(w.t, timeout, func() error {
		if got = w.messages(subj); len(got) < n {
			return fmt.Errorf("%s holds %d messages, want %d", subj, len(got), n)
		}
		return nil
	})
	if len(got) != n {
		w.t.Fatalf("%s holds %d messages, want %d", subj, len(got), n)
	}
	return got
}

// waitConfirmed waits until the slot's confirmed_flush_lsn is at or past lsn.
func (w *world) waitConfirmed(lsn string) {
	w.t.Helper()
	testutil.Eventually(w.t, 30*time.Second, func() error {
		var ok bool
		if err := w.pool.QueryRow(context.Background(), `SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots
			WHERE slot_name = $2`, lsn, w.opts.Slot).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("slot has not confirmed %s", lsn)
		}
		return nil
	})
}

func eventType(t *testing.T, m jetstream.RawStreamMsg) string {
	t.Helper()
	var env struct {
		EventType string `json:"event_type"`
	}
	if err := json.Unmarshal(m.Data, &env); err != nil {
		t.Fatalf("message on %s is not JSON: %v", m.Subject, err)
	}
	return env.EventType
}

// TestRelayDecisions: good rows are published in commit order with their
// position; a row whose envelope cannot be built (a subject with a space, a
// scalar payload, an envelope over the max payload) and a row no stream
// covers are dead-lettered with the reason; the slot confirms past all of
// them; stopping returns nil.
func TestRelayDecisions(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	stop := w.run()
	big := strings.Repeat("x", 10<<10)
	w.insert(
		`(resource_type, event_type, payload) VALUES ('ok', 'one', '{}')`,
		`(event_id, resource_type, event_type, payload, subject) VALUES ('aaaaaaaa-0000-4000-8000-000000000001', 'bad', 'space', '{}', 'has space')`,
		`(resource_type, event_type, payload) VALUES ('ok', 'two', '{}')`,
	)
	w.insert(
		`(event_id, resource_type, event_type, payload) VALUES ('aaaaaaaa-0000-4000-8000-000000000002', 'bad', 'scalar', '"just a string"')`,
		`(event_id, resource_type, event_type, payload) VALUES ('aaaaaaaa-0000-4000-8000-000000000003', 'bad', 'big', jsonb_build_object('blob', '`+big+`'))`,
		`(event_id, resource_type, event_type, payload, subject) VALUES ('aaaaaaaa-0000-4000-8000-000000000004', 'bad', 'nostream', '{}', 'elsewhere.orders')`,
	)
	last := w.insert(`(resource_type, event_type, payload) VALUES ('ok', 'three', '{}')`)

	got := w.waitMessages(subject, 3, 30*time.Second)
	for i, want := range []string{"one", "two", "three"} {
		if et := eventType(t, got[i]); et != want {
			t.Errorf("message %d is %q, want %q (commit order)", i, et, want)
		}
		if got[i].Header.Get(envelope.HeaderCommitLSN) == "" || got[i].Header.Get(envelope.HeaderTxIndex) == "" {
			t.Errorf("message %d lacks its position: %v", i, got[i].Header)
		}
	}
	dead := w.waitMessages(dlq, 4, 30*time.Second)
	reasons := map[string]string{}
	for _, m := range dead {
		if m.Header.Get(envelope.HeaderErrorClass) != "relay" || m.Header.Get("Bridge-Failed-At") == "" {
			t.Errorf("dead letter lacks failure headers: %v", m.Header)
		}
		var body struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil {
			t.Fatalf("dead letter body is not JSON: %v", err)
		}
		reasons[body.EventID] = m.Header.Get(envelope.HeaderError)
	}
	for i := 1; i <= 4; i++ {
		if id := fmt.Sprintf("aaaaaaaa-0000-4000-8000-00000000000%d", i); reasons[id] == "" {
			t.Errorf("row %s not dead-lettered with a reason; got %v", id, reasons)
		}
	}
	if !strings.Contains(reasons["aaaaaaaa-0000-4000-8000-000000000004"], "no JetStream stream covers") {
		t.Errorf("row without a stream: reason %q", reasons["aaaaaaaa-0000-4000-8000-000000000004"])
	}
	w.waitConfirmed(last)
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after ctx ended, want nil", err)
	}
	if p, d := w.obs.published.Load(), w.obs.deadLettered.Load(); p != 3 || d != 4 {
		t.Errorf("observer: published=%d dead-lettered=%d, want 3 and 4", p, d)
	}
}

// TestRelaySkipsWithoutDLQ: with UseDLQ false a row that cannot be
// published is skipped (nothing on the DLQ subject), counted, and does not
// hold the slot back: the rows after it are published and confirmed.
func TestRelaySkipsWithoutDLQ(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.opts.UseDLQ = false
	w.run()
	w.insert(
		`(resource_type, event_type, payload) VALUES ('ok', 'one', '{}')`,
		`(resource_type, event_type, payload) VALUES ('bad', 'scalar', '"just a string"')`,
		`(resource_type, event_type, payload, subject) VALUES ('bad', 'nostream', '{}', 'elsewhere.orders')`,
	)
	last := w.insert(`(resource_type, event_type, payload) VALUES ('ok', 'two', '{}')`)
	w.waitMessages(subject, 2, 30*time.Second)
	w.waitConfirmed(last)
	if n := len(w.messages(dlq)); n != 0 {
		t.Errorf("DLQ holds %d messages with UseDLQ false, want 0", n)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if d := w.obs.deadLettered.Load(); d != 2 {
			return fmt.Errorf("dead-lettered=%d, want 2 (skipped rows count)", d)
		}
		return nil
	})
}

// TestRelayByteBoundedWindowKeepsFlowing: with a publish window of 64 KiB
// the relay streams many times that: each acked message gives its bytes
// back to the window before its storage is reused for the next event.
func TestRelayByteBoundedWindowKeepsFlowing(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.opts.MaxInflightBytes = 64 << 10
	w.run()
	pad := strings.Repeat("y", 400)
	var last string
	for range 10 {
		last = w.insert(`(resource_type, event_type, payload)
			SELECT 'ok', 'n', jsonb_build_object('n', g, 'pad', '` + pad + `') FROM generate_series(1, 100) g`)
	}
	w.waitMessages(subject, 1000, 60*time.Second) // ~600 KiB through a 64 KiB window
	w.waitConfirmed(last)
}
