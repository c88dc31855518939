package sink_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// A dead letter the Ruby gem wrote on the shared DLQ subject is listed with
// its class, error, original subject and deliveries, and replays to its
// original subject without the gem's failure headers or its message id.
func TestSink_GemDeadLetterListedAndReplayed(t *testing.T) {
	e := newEnv(t)
	obs, _ := e.run(t, &effectHandler{}, nil)
	body := testutil.GemEnvelope("gem-1", "billing", "user", "42")
	gm := testutil.GemDeadLetter(dlqSubject, filter, "gem-1", body, "max_deliver_exceeded", "ActiveRecord::RecordInvalid",
		"Validation failed: Email is invalid", 5, 17)
	e.publishRaw(t, gm.Subject, gm.Data, gm.Header)

	dls := e.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	if dl.EventID != "gem-1" || dl.EventType != "user.updated" || dl.Class != envelope.ClassExhausted ||
		dl.Error != "ActiveRecord::RecordInvalid: Validation failed: Email is invalid" ||
		dl.OriginalSubject != filter || dl.Deliveries != 5 || dl.FailedAt != "2026-01-02T03:05:00Z" {
		b, _ := json.Marshal(dl)
		t.Fatalf("gem dead letter listed as %s", b)
	}

	msg, err := sink.ReplayMessage(dl)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != filter {
		t.Fatalf("replay subject %q, want %q", msg.Subject, filter)
	}
	for k := range msg.Header {
		switch k {
		case envelope.HeaderMsgID:
		default:
			t.Fatalf("replay kept header %s=%v", k, msg.Header[k])
		}
	}
	if got, want := msg.Header.Get(envelope.HeaderMsgID), "replay-gem-1-"+strconv.FormatUint(dl.Sequence, 10); got != want {
		t.Fatalf("replay Nats-Msg-Id=%q, want %q", got, want)
	}
	e.publishRaw(t, msg.Subject, msg.Data, msg.Header)
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1})
	if got := e.effects(t); !slices.Equal(got, []string{"gem-1"}) {
		t.Fatalf("effects=%v, want gem-1 applied by the replay", got)
	}
}

// The sink's own dead letter carries the gem's headers beside Bridge-*, with
// the gem's values, so the gem's side of a mixed fleet reads it too; a
// replay drops both sets.
func TestSink_DeadLetterCarriesGemHeaders(t *testing.T) {
	e := newEnv(t)
	obs, _ := e.run(t, &effectHandler{before: func(*sink.Event, int) error {
		return sink.Permanent("refused")
	}}, nil)
	m := e.event(t, "d1", "user", "1", pos("0/1", 0))
	e.publish(t, m)
	obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1})
	dls := e.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	h := dls[0].Header
	checkDeadLetter(t, dls[0], m, envelope.ClassHandler, "refused", 1)
	if h.Get("x-dead-letter") != "true" || h.Get("x-dlq-reason") != "unrecoverable" || h.Get("x-deliveries") != "1" {
		t.Fatalf("gem headers missing or wrong: %v", h)
	}
	var ctx map[string]any
	if err := json.Unmarshal([]byte(h.Get("x-dlq-context")), &ctx); err != nil {
		t.Fatalf("x-dlq-context %q: %v", h.Get("x-dlq-context"), err)
	}
	if ctx["event_id"] != "d1" || ctx["original_subject"] != m.Subject || ctx["reason"] != "unrecoverable" ||
		ctx["deliveries"] != float64(1) || ctx["error_message"] != "refused" || ctx["published_at"] == "" {
		t.Fatalf("x-dlq-context=%v", ctx)
	}
	msg, err := sink.ReplayMessage(dls[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"x-dead-letter", "x-dlq-reason", "x-deliveries", "x-dlq-context", envelope.HeaderErrorClass} {
		if _, ok := msg.Header[k]; ok {
			t.Fatalf("replay kept %s", k)
		}
	}
}
