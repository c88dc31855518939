package main_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// runAudit runs `relay audit --json` with args and decodes its report.
func (h *harness) runAudit(wantCode int, args ...string) audit.RelayReport {
	h.t.Helper()
	start := time.Now()
	res := testutil.RunCommand(h.t, 60*time.Second, h.bin, h.env, append([]string{"audit", "--json", "--settle", "0s"}, args...)...)
	h.t.Logf("audit %v took %s", args, time.Since(start))
	if res.Code != wantCode {
		h.t.Fatalf("relay audit %v: exit %d, want %d\n%s\n%s", args, res.Code, wantCode, res.Stdout, res.Stderr)
	}
	var rep audit.RelayReport
	if err := json.Unmarshal([]byte(res.Stdout), &rep); err != nil {
		h.t.Fatalf("relay audit output is not a report: %v\n%s", err, res.Stdout)
	}
	return rep
}

// TestAudit_RelayFindsMissingCopiesAndDisorder drives the relay binary over
// 50 events (one dead-lettered) and audits with a page of 7: a clean run has
// no gap and every row accounted for; then a copy stored under another id is
// reported as stored twice (no gap), messages with decreasing positions as
// out of order, and a message deleted from the stream as missing (gap).
func TestAudit_RelayFindsMissingCopiesAndDisorder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h.provision()
	p := h.start()
	waitReplicating(t, p)
	var ids []string
	for range 7 {
		tx, err := h.insertTx(ctx, 7, false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tx...)
	}
	// A subject with a space cannot be published: the relay dead-letters the row.
	dead := testutil.NewUUID()
	if _, err := h.pool.Exec(ctx, `INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, subject)
		VALUES ($1, 'user', 'created', 'bad subject')`, dead); err != nil {
		t.Fatal(err)
	}
	h.waitCount(subjAB, 49, 30*time.Second, p)
	h.waitCount(appA+".sync.dlq", 1, 30*time.Second, p)

	rep := h.runAudit(cli.ExitOK, "--since", "1h", "--page", "7")
	if rep.Rows != 50 || rep.Published != 49 || rep.DeadLettered != 1 || rep.Missing != 0 || rep.StoredTwice != 0 || rep.OutOfOrder != 0 {
		t.Fatalf("clean run: %+v", rep)
	}
	if rep.Messages != 50 {
		t.Fatalf("paging read %d messages, want 50 (49 events and 1 dead letter)", rep.Messages)
	}

	// A copy of a stored event under another Nats-Msg-Id, stored last.
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := s.GetLastMsgForSubject(ctx, subjAB)
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.GetMsg(ctx, orig.Sequence-10)
	if err != nil {
		t.Fatal(err)
	}
	cp := nats.NewMsg(subjAB)
	cp.Data = first.Data
	for k, v := range first.Header {
		cp.Header[k] = v
	}
	cp.Header.Set(envelope.HeaderMsgID, "copy-"+first.Header.Get(envelope.HeaderMsgID))
	if _, err := h.js.PublishMsg(ctx, cp); err != nil {
		t.Fatal(err)
	}
	rep = h.runAudit(cli.ExitOK, "--since", "1h", "--page", "7")
	if rep.StoredTwice != 1 || rep.OutOfOrder != 0 || rep.Missing != 0 {
		t.Fatalf("after a copy: %+v", rep)
	}
	if d := rep.Duplicates[0]; !slices.Contains(d.IDs, first.Header.Get(envelope.HeaderMsgID)) || len(d.Seqs) != 2 {
		t.Fatalf("copy reported as %+v", d)
	}

	// Two new events whose positions lie behind what the stream holds.
	behind := []string{testutil.NewUUID(), testutil.NewUUID()}
	for i, id := range behind {
		m := nats.NewMsg(subjAB)
		m.Data = []byte(`{}`)
		m.Header.Set(envelope.HeaderMsgID, id)
		m.Header.Set(envelope.HeaderCommitLSN, []string{"0/2000", "0/1000"}[i])
		m.Header.Set(envelope.HeaderTxIndex, "0")
		if _, err := h.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	rep = h.runAudit(cli.ExitGap, "--since", "1h")
	if rep.OutOfOrder != 2 || rep.Missing != 0 || rep.Violations[0].ID != behind[0] || rep.Violations[1].ID != behind[1] {
		t.Fatalf("after positions behind: %+v", rep)
	}
	for _, m := range []uint64{rep.Violations[0].Seq, rep.Violations[1].Seq} {
		if err := s.DeleteMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	// A stored event deleted from the stream is missing.
	victim, err := s.GetMsg(ctx, orig.Sequence-20)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, victim.Sequence); err != nil {
		t.Fatal(err)
	}
	rep = h.runAudit(cli.ExitGap, "--since", "all", "--page", "7")
	if rep.Missing != 1 || rep.MissingIDs[0] != victim.Header.Get(envelope.HeaderMsgID) || rep.OutOfOrder != 0 {
		t.Fatalf("after a deletion: %+v", rep)
	}
	// The table names it too, and the verdict goes to stderr once.
	res := testutil.RunCommand(t, 60*time.Second, h.bin, h.env, "audit", "--since", "1h", "--settle", "0s")
	if res.Code != cli.ExitGap || !strings.Contains(res.Stdout, victim.Header.Get(envelope.HeaderMsgID)) ||
		!strings.Contains(res.Stderr, "1 rows missing") {
		t.Fatalf("table: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
	}
}
