package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// In a mixed fleet the DLQ subject holds the Ruby gem's dead letters beside
// the sink's. `dlq list` shows a gem dead letter's class, error, subject and
// deliveries; `dlq replay --all` replays it to its original subject, and a
// dead letter it cannot replay (here one that names no subject) is reported
// and skipped, not the end of the replay; the command then fails.
func TestBinary_DLQGemFormatListAndReplayAll(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := w.runCmd(t, []string{"provision"}); err != nil {
		t.Fatalf("sink provision: %v\n%s", err, out)
	}
	// Oldest first: the unreplayable one must not hide the gem's.
	if _, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: "orders.sync.dlq", Data: []byte(`{"note":"no failure headers"}`)}); err != nil {
		t.Fatal(err)
	}
	gm := testutil.GemDeadLetter("orders.sync.dlq", "billing.sync.orders", "gem-7", testutil.GemEnvelope("gem-7", "billing", "user", "7"),
		"unrecoverable", "ArgumentError", "bad input", 1, 3)
	if _, err := w.js.PublishMsg(ctx, gm); err != nil {
		t.Fatal(err)
	}

	out, err := w.runCmd(t, []string{"dlq", "list", "--json"})
	if err != nil {
		t.Fatalf("sink dlq list: %v\n%s", err, out)
	}
	var gem *sink.DeadLetter
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var dl sink.DeadLetter
		if json.Unmarshal([]byte(line), &dl) == nil && dl.EventID == "gem-7" {
			gem = &dl
		}
	}
	if gem == nil || gem.Class != "handler" || gem.Error != "ArgumentError: bad input" ||
		gem.OriginalSubject != "billing.sync.orders" || gem.Deliveries != 1 {
		t.Fatalf("gem dead letter not listed with its failure:\n%s", out)
	}

	out, err = w.runCmd(t, []string{"dlq", "replay", "--all"})
	if err == nil {
		t.Fatalf("dlq replay --all succeeded with an unreplayable dead letter:\n%s", out)
	}
	for _, want := range []string{"skipped seq 1 ", "replayed seq 2 event gem-7 to billing.sync.orders", "replayed 1 dead letters",
		"1 dead letters not replayed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dlq replay --all output lacks %q:\n%s", want, out)
		}
	}
	st, err := w.js.Stream(ctx, "jetstream-bridge-stream")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "billing.sync.orders")
	if err != nil {
		t.Fatalf("replayed event not on billing.sync.orders: %v", err)
	}
	if got := m.Header.Get("Nats-Msg-Id"); got != "replay-gem-7-2" || m.Header.Get("x-dlq-context") != "" ||
		!strings.Contains(string(m.Data), `"event_id":"gem-7"`) {
		t.Fatalf("replayed message: headers %v body %s", m.Header, m.Data)
	}
}
