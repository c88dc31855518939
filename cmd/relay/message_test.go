package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// publishTx calls jetstream_publish once per mode in one transaction
// ("table" or "message", set with SET LOCAL), committed unless rollback, and
// returns the event ids in call order.
func publishTx(ctx context.Context, pool *pgxpool.Pool, modes []string, rollback bool) ([]string, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx)
	ids := make([]string, len(modes))
	for i, mode := range modes {
		if _, err := tx.Exec(ctx, "SELECT set_config('jetstream_bridge.outbox_mode', $1, true)", mode); err != nil {
			return nil, err
		}
		if err := tx.QueryRow(ctx, `SELECT jetstream_publish('user', 'created', jsonb_build_object('id', $1::text, 'n', $1::int))::text`,
			fmt.Sprint(i)).Scan(&ids[i]); err != nil {
			return nil, err
		}
	}
	if rollback {
		return ids, tx.Rollback(ctx)
	}
	return ids, tx.Commit(ctx)
}

// TestMessageModeMatchesTableMode writes the same events as rows and as
// logical decoding messages in one transaction: they are published in call
// order with consecutive positions and byte-identical bodies and headers
// (event id and position aside). A rolled-back message is never published,
// messages of other prefixes are ignored, a non-transactional message with
// the outbox prefix and one whose content is not JSON are dead-lettered with
// a reason while later events flow, and the idle slot still follows the WAL.
func TestMessageModeMatchesTableMode(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	p := h.start()
	waitReplicating(t, p)
	ctx := context.Background()

	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	calls := []string{
		// Every field, a payload with escapes, non-ASCII text, nesting and
		// a non-integral number, a headers object, an offset timestamp.
		`SELECT jetstream_publish('user', 'created', '{"id":"u-1","name":"Ann \"A\"\n","city":"Zürich","n":[1,2.50,{"x":null}]}',
			'u-1', '{"x-tenant":"t1","n":5}', NULL, NULL, '` + tp + `', '2026-01-02 03:04:05.123456+05:30')::text`,
		// The fallbacks: resource type from the event type, resource id
		// from payload.id, occurred_at from now() in the session's zone.
		`SELECT jetstream_publish(NULL, 'order.paid', '{"id":42}')::text`,
	}
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// jsonb renders timestamptz in the session's zone; the row's text comes
	// from the walsender in UTC. Both must give the same envelope.
	if _, err := tx.Exec(ctx, "SET LOCAL TimeZone = 'America/St_Johns'"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, call := range calls {
		for _, mode := range []string{"table", "message"} {
			var id string
			if _, err := tx.Exec(ctx, "SELECT set_config('jetstream_bridge.outbox_mode', $1, true)", mode); err != nil {
				t.Fatal(err)
			}
			if err := tx.QueryRow(ctx, call).Scan(&id); err != nil {
				t.Fatalf("%s mode: %v", mode, err)
			}
			ids = append(ids, id)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var rows int
	h.pool.QueryRow(ctx, "SELECT count(*) FROM jetstream_outbox_events").Scan(&rows)
	if rows != 2 {
		t.Fatalf("outbox table holds %d rows, want 2 (message mode must not insert)", rows)
	}

	rolledBack, err := publishTx(ctx, h.pool, []string{"message", "table", "message"}, true)
	if err != nil {
		t.Fatal(err)
	}
	const badID = "bbbbbbbb-0000-4000-8000-000000000001"
	for _, st := range []string{
		// Another tool's messages, transactional or not, with content that
		// would be a valid event.
		`SELECT pg_logical_emit_message(true, 'other_tool', '{"event_id":"cccccccc-0000-4000-8000-000000000001","event_type":"x","resource_type":"y","payload":{},"occurred_at":"2026-01-02T03:04:05Z"}')`,
		`SELECT pg_logical_emit_message(false, 'jetstream_bridge', '{}')`,
		// Ours, but sent even if its transaction rolled back.
		`SELECT pg_logical_emit_message(false, 'jetstream_bridge_outbox', '{"event_id":"` + badID + `","event_type":"x","resource_type":"y","payload":{},"occurred_at":"2026-01-02T03:04:05Z"}')`,
		// Ours, transactional, but not an event.
		`SELECT pg_logical_emit_message(true, 'jetstream_bridge_outbox', 'not json {')`,
	} {
		if _, err := h.pool.Exec(ctx, st); err != nil {
			t.Fatalf("%v: %s", err, st)
		}
	}
	last, err := publishTx(ctx, h.pool, []string{"message", "table"}, false)
	if err != nil {
		t.Fatal(err)
	}
	committed := append(append([]string{}, ids...), last...)

	dlq := appA + ".sync.dlq"
	h.waitCount(subjAB, len(committed), 30*time.Second, p)
	h.waitCount(dlq, 2, 30*time.Second, p)
	msgs := h.checkExactlyOnce(subjAB, committed, [][]string{ids, last}, rolledBack, true)

	// One transaction: one commit LSN, indexes 0..3 in call order.
	for i, m := range msgs[:4] {
		hd := m.Headers()
		if got, want := hd.Get(envelope.HeaderMsgID), ids[i]; got != want {
			t.Fatalf("message %d is event %s, want %s", i, got, want)
		}
		if got, want := hd.Get(envelope.HeaderTxIndex), fmt.Sprint(i); got != want {
			t.Errorf("message %d: Bridge-Tx-Index=%s, want %s", i, got, want)
		}
		if got, want := hd.Get(envelope.HeaderCommitLSN), msgs[0].Headers().Get(envelope.HeaderCommitLSN); got != want {
			t.Errorf("message %d: Bridge-Commit-LSN=%s, want %s (same transaction)", i, got, want)
		}
	}
	for i := 0; i < 4; i += 2 {
		row, msg := msgs[i], msgs[i+1]
		rowBody := strings.ReplaceAll(string(row.Data()), ids[i], "ID")
		msgBody := strings.ReplaceAll(string(msg.Data()), ids[i+1], "ID")
		if rowBody != msgBody {
			t.Errorf("call %d: bodies differ\nrow:     %s\nmessage: %s", i/2, rowBody, msgBody)
		}
		rh, mh := comparable(row.Headers()), comparable(msg.Headers())
		if fmt.Sprint(rh) != fmt.Sprint(mh) {
			t.Errorf("call %d: headers differ\nrow:     %v\nmessage: %v", i/2, rh, mh)
		}
	}
	if !strings.Contains(string(msgs[1].Data()), `"occurred_at":"2026-01-01T21:34:05.123456Z"`) {
		t.Errorf("occurred_at not converted to UTC: %s", msgs[1].Data())
	}

	reasons := map[string]string{}
	for _, m := range h.readStream(dlq) {
		hd := m.Headers()
		if hd.Get(envelope.HeaderErrorClass) != envelope.ClassRelay || hd.Get(envelope.HeaderCommitLSN) == "" {
			t.Errorf("dead letter lacks class relay or a position: %v", hd)
		}
		var body struct {
			EventID string          `json:"event_id"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(m.Data(), &body); err != nil {
			t.Fatalf("dead letter body is not JSON: %v", err)
		}
		key := body.EventID
		if key == "" {
			key = string(body.Payload)
		}
		reasons[key] = hd.Get(envelope.HeaderError)
	}
	if r := reasons[badID]; !strings.Contains(r, "not transactional") {
		t.Errorf("non-transactional message: reason %q, want it to say it is not transactional (all: %v)", r, reasons)
	}
	if r := reasons[`"not json {"`]; !strings.Contains(r, "not a JSON object") {
		t.Errorf("bad content: reason %q, want the content kept and the cause named (all: %v)", r, reasons)
	}
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(len(committed)+2); got != want {
		t.Errorf("stream holds %d messages, want %d: another prefix was published", got, want)
	}

	// Nothing in flight: the slot's confirmed position passes every message.
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

// comparable is a message's headers without its identity and position.
func comparable(h nats.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		switch k {
		case envelope.HeaderMsgID, envelope.HeaderTxIndex:
			continue
		}
		out[k] = v
	}
	return out
}

// TestMessageModeKillMidStream kills the relay twice while writers commit
// messages (the database's default mode, set with ALTER DATABASE) mixed with
// rows: every committed event is published once, in transaction order.
func TestMessageModeKillMidStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	h.provision()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var db string
	h.pool.QueryRow(ctx, "SELECT current_database()").Scan(&db)
	if _, err := h.pool.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" SET jetstream_bridge.outbox_mode = 'message'"); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, h.dbURL) // new sessions take the database's setting
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var mode string
	pool.QueryRow(ctx, "SELECT current_setting('jetstream_bridge.outbox_mode')").Scan(&mode)
	if mode != "message" {
		t.Fatalf("outbox_mode=%q in a new session, want message", mode)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	var txs [][]string
	var committed []string
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 120 && ctx.Err() == nil; i++ {
				modes := []string{"message", "message", "table", "message"}[:1+i%4]
				ids, err := publishTx(ctx, pool, modes, false)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				txs = append(txs, ids)
				committed = append(committed, ids...)
				mu.Unlock()
			}
		}()
	}
	h.killRounds(2, 150)
	wg.Wait()
	p := h.start()
	h.waitCount(subjAB, len(committed), 60*time.Second, p)
	h.checkExactlyOnce(subjAB, committed, txs, nil, false)
}
