package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// runAudit runs `relay audit` with args to its end and returns the report
// (from --json), the exit status and the output.
func (h *harness) runAudit(args ...string) (*audit.RelayReport, int, string) {
	h.t.Helper()
	t0 := time.Now()
	defer func() { h.t.Logf("audit %v took %s", args, time.Since(t0)) }()
	p := testutil.StartProcess(h.t, h.bin, h.env, append([]string{"audit", "--json"}, args...)...)
	_ = p.Wait(2 * time.Minute)
	out := p.Output()
	var rep audit.RelayReport
	start := strings.Index(out, "{")
	if start < 0 {
		h.t.Fatalf("relay audit printed no report (exit %d):\n%s", p.ExitCode(), out)
	}
	dec := json.NewDecoder(strings.NewReader(out[start:]))
	if err := dec.Decode(&rep); err != nil {
		h.t.Fatalf("relay audit report: %v\n%s", err, out)
	}
	return &rep, p.ExitCode(), out
}

// The relay audit finds nothing on a clean run, reading the stream in pages
// of 7; it then finds a message deleted from the stream (a gap, exit 3), a
// row stored twice and stored out of commit order, and counts a row the
// relay dead-lettered as such, not as missing.
func TestAuditRelayFindsMissingDuplicateOutOfOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	h.env = append(h.env, "DUPLICATE_WINDOW=1s")
	p := h.start()
	waitReplicating(t, p)
	ctx := context.Background()
	for range 10 {
		if _, err := h.insertTx(ctx, 5, false); err != nil {
			t.Fatal(err)
		}
	}
	// A row whose subject cannot be published: the relay dead-letters it.
	var deadID string
	if err := h.pool.QueryRow(ctx, `INSERT INTO jetstream_outbox_events (resource_type, event_type, subject)
		VALUES ('user', 'created', 'bad subject') RETURNING event_id::text`).Scan(&deadID); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 50, 30*time.Second, p)
	h.waitCount(appA+".sync.dlq", 1, 30*time.Second, p)

	rep, code, out := h.runAudit("--since", "all", "--page", "7", "--settle", "0")
	if code != 0 {
		t.Fatalf("clean audit exit %d, want 0:\n%s", code, out)
	}
	if rep.Rows != 51 || rep.Messages != 51 || rep.Published != 50 || rep.DeadLettered != 1 || rep.Missing != 0 ||
		rep.StoredTwice != 0 || rep.OutOfOrder != 0 {
		t.Fatalf("clean audit: %+v", rep)
	}
	if len(rep.DeadLetteredIDs) != 1 || rep.DeadLetteredIDs[0] != deadID {
		t.Fatalf("dead-lettered ids %v, want [%s]", rep.DeadLetteredIDs, deadID)
	}

	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	// Lose one message: the 10th of the publish subject.
	lost, err := s.GetMsg(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 10); err != nil {
		t.Fatal(err)
	}
	// Store the 20th again once the duplicate window has passed: same
	// Nats-Msg-Id, an earlier position than the last message's.
	again, err := s.GetMsg(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		ack, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: again.Subject, Header: again.Header, Data: again.Data})
		if err != nil {
			return err
		}
		if ack.Duplicate {
			return fmt.Errorf("still within the duplicate window")
		}
		return nil
	})

	rep, code, out = h.runAudit("--since", "1h", "--page", "7", "--settle", "100ms")
	if code != 3 {
		t.Fatalf("audit after a loss: exit %d, want 3:\n%s", code, out)
	}
	if !strings.Contains(out, "audit found a gap: 1 outbox rows missing") {
		t.Fatalf("no gap verdict on stderr:\n%s", out)
	}
	lostID := lost.Header.Get(jetstream.MsgIDHeader)
	againID := again.Header.Get(jetstream.MsgIDHeader)
	if rep.Missing != 1 || len(rep.MissingIDs) != 1 || rep.MissingIDs[0] != lostID {
		t.Fatalf("missing %d %v, want 1 [%s]", rep.Missing, rep.MissingIDs, lostID)
	}
	if !rep.Rechecked {
		t.Fatalf("a missing row was not looked at again after --settle")
	}
	if rep.StoredTwice != 1 || len(rep.StoredTwiceIDs) != 1 || rep.StoredTwiceIDs[0].EventID != againID ||
		len(rep.StoredTwiceIDs[0].Seqs) != 2 || rep.StoredTwiceIDs[0].Seqs[0] != 20 {
		t.Fatalf("stored twice %d %+v, want 1 %s at seq 20 and later", rep.StoredTwice, rep.StoredTwiceIDs, againID)
	}
	if rep.OutOfOrder != 1 || len(rep.OutOfOrderAt) != 1 || rep.OutOfOrderAt[0].EventID != againID {
		t.Fatalf("out of order %d %+v, want 1 at %s", rep.OutOfOrder, rep.OutOfOrderAt, againID)
	}
	if rep.Published != 49 || rep.DeadLettered != 1 {
		t.Fatalf("published %d dead-lettered %d, want 49 and 1", rep.Published, rep.DeadLettered)
	}

	// The human table says the same.
	tp := testutil.StartProcess(t, h.bin, h.env, "audit", "--since", "all", "--settle", "0")
	_ = tp.Wait(time.Minute)
	if tp.ExitCode() != 3 || !strings.Contains(tp.Output(), lostID) || !strings.Contains(tp.Output(), "GAP") {
		t.Fatalf("table audit exit %d:\n%s", tp.ExitCode(), tp.Output())
	}
}
