package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// restrictedHarness is a relay world on a NATS server with users: the
// harness's own client is admin, the relay runs as the least-privilege user
// relay with AUTO_PROVISION=false after `relay provision` ran as admin.
func restrictedHarness(t *testing.T) *harness {
	t.Helper()
	ns, _ := testutil.StartNATSWithConfig(t, testutil.RelayUsersConf)
	adminURL := strings.Replace(ns.URL(), "nats://", "nats://admin:adminpw@", 1)
	h := newHarness(t, testutil.NewDatabase(t), adminURL)
	env := []string{}
	for _, e := range h.env {
		if !strings.HasPrefix(e, "NATS_URLS=") {
			env = append(env, e)
		}
	}
	h.env = append(env, "NATS_URLS="+ns.URL(), "AUTO_PROVISION=false", "NO_STREAM_TIMEOUT=2s")
	p := testutil.StartProcess(t, h.bin, append(append([]string{}, h.env...), "NATS_USER=admin", "NATS_PASSWORD=adminpw"), "provision")
	if err := p.Wait(60 * time.Second); err != nil {
		t.Fatalf("relay provision as admin: %v\n%s", err, p.Output())
	}
	h.env = append(h.env, "NATS_USER=relay", "NATS_PASSWORD=relaypw")
	return h
}

// deadLetterReasons returns the Bridge-Error of each dead letter, by the
// event_id in its body.
func (h *harness) deadLetterReasons() map[string]string {
	h.t.Helper()
	got := map[string]string{}
	for _, m := range h.readStream(appA + ".sync.dlq") {
		var body map[string]any
		if err := json.Unmarshal(m.Data(), &body); err != nil {
			h.t.Errorf("dead letter body is not JSON: %v", err)
		}
		if c := m.Headers().Get("Bridge-Error-Class"); c != "relay" {
			h.t.Errorf("dead letter class %q, want relay", c)
		}
		got[fmt.Sprint(body["event_id"])] = m.Headers().Get("Bridge-Error")
	}
	return got
}

// waitSlotPast waits until the slot's confirmed position reaches the
// server's current WAL position as of now.
func (h *harness) waitSlotPast(p *testutil.Process) {
	h.t.Helper()
	ctx := context.Background()
	var target string
	if err := h.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		h.t.Fatal(err)
	}
	testutil.Eventually(h.t, 30*time.Second, func() error {
		var ok bool
		var confirmed string
		if err := h.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn, confirmed_flush_lsn::text
			FROM pg_replication_slots WHERE slot_name = $1`, h.slot, target).Scan(&ok, &confirmed); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("slot confirmed %s, want at least %s; relay:\n%s", confirmed, target, testutil.Tail(p.Output(), 5))
		}
		return nil
	})
}

// runRefusedSubject inserts a row whose subject override JetStream never
// takes between two good rows, under least privilege: the row is
// dead-lettered with a reason naming want, the rows after it are published
// and the slot moves past all of them.
func runRefusedSubject(t *testing.T, subject, want string) {
	h := restrictedHarness(t)
	p := h.start()
	waitReplicating(t, p)
	const badID = "cccccccc-0000-4000-8000-000000000001"
	execTx(t, h, []string{
		`INSERT INTO jetstream_outbox_events (resource_type, event_type, payload) VALUES ('ok', 'one', '{}')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload, subject)
  VALUES ('` + badID + `', 'bad', 'refused', '{}', $1)`,
	}, subject)
	if _, err := h.insertTx(context.Background(), 3, false); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 4, 60*time.Second, p)
	h.waitCount(appA+".sync.dlq", 1, 60*time.Second, p)
	if reason := h.deadLetterReasons()[badID]; !strings.Contains(reason, want) {
		t.Fatalf("dead letter reason %q does not say %q", reason, want)
	}
	h.waitSlotPast(p)
	select {
	case <-p.Done():
		t.Fatalf("relay exited:\n%s", testutil.Tail(p.Output(), 10))
	default:
	}
}

// TestNoStreamSubjectIsDeadLettered: with AUTO_PROVISION=false a row whose
// subject no stream covers is answered "no responders" on every try; after
// NO_STREAM_TIMEOUT, with the stream answering on the DLQ subject, it is
// dead-lettered and the relay goes on.
func TestNoStreamSubjectIsDeadLettered(t *testing.T) {
	t.Parallel()
	runRefusedSubject(t, "elsewhere.orders", "no stream covers it")
}

// TestForbiddenSubjectIsDeadLettered: a row whose subject lies outside the
// relay's publish permissions is dropped by the server with a permissions
// violation and never answered; it is dead-lettered and the relay goes on.
func TestForbiddenSubjectIsDeadLettered(t *testing.T) {
	t.Parallel()
	runRefusedSubject(t, "forbidden.orders", "permissions violation")
}

// TestBackfillDeadLettersRefusedRows: `relay backfill` over rows with a
// subject no stream covers, a subject outside the publish permissions and a
// message larger than the stream takes dead-letters those three with their
// reasons, publishes the rest and exits 0.
func TestBackfillDeadLettersRefusedRows(t *testing.T) {
	t.Parallel()
	h := restrictedHarness(t)
	ctx := context.Background()
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 32 << 10
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	good, err := h.insertTx(ctx, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"dddddddd-0000-4000-8000-000000000001", "dddddddd-0000-4000-8000-000000000002", "dddddddd-0000-4000-8000-000000000003"}
	execTx(t, h, []string{
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload, subject) VALUES ('` + ids[0] + `', 'bad', 'nostream', '{}', 'elsewhere.orders')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload, subject) VALUES ('` + ids[1] + `', 'bad', 'forbidden', '{}', 'forbidden.orders')`,
		`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload) VALUES ('` + ids[2] + `', 'bad', 'large', jsonb_build_object('blob', $1::text))`,
	}, strings.Repeat("x", 48<<10))
	more, err := h.insertTx(ctx, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	b := testutil.StartProcess(t, h.bin, h.env, "backfill", "--since", "all")
	if err := b.Wait(120 * time.Second); err != nil {
		t.Fatalf("backfill: %v\n%s", err, testutil.Tail(b.Output(), 10))
	}
	if !strings.Contains(b.Output(), "7 rows republished (3 dead-lettered") {
		t.Fatalf("backfill output: %s", testutil.Tail(b.Output(), 3))
	}
	h.checkExactlyOnce(subjAB, append(good, more...), nil, nil, false)
	reasons := h.deadLetterReasons()
	for i, want := range []string{"no stream covers it", "permissions violation", "maximum"} {
		if !strings.Contains(reasons[ids[i]], want) {
			t.Errorf("row %s: dead letter reason %q does not say %q", ids[i], reasons[ids[i]], want)
		}
	}
	if n, _ := h.streamCount(appA + ".sync.dlq"); n != 3 {
		t.Errorf("%d dead letters, want 3", n)
	}
}
