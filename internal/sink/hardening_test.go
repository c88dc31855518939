package sink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// Two producers (two source databases behind one wildcard FILTER_SUBJECT)
// feed one key. Their positions are LSNs of different databases: each is
// compared only with its own producer's, so neither producer's events are
// taken for stale, while each producer's own older events still are.
func TestSink_SkipStaleKeepsProducersApart(t *testing.T) {
	e := newEnv(t)
	h := &effectHandler{}
	obs, _ := e.run(t, h, func(o *sink.Options) { o.SkipStale = true; o.Concurrency = 1 })
	shop := envelope.Builder{Producer: "shop", Subjects: e.builder.Subjects}
	fromShop := func(id string, p envelope.Position) envelope.Message {
		m, err := shop.Build(&envelope.Row{EventID: id, ResourceType: "user", ResourceID: "1", EventType: "user.updated",
			Payload: []byte(`{"n":1}`), Headers: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05.123456+00"}, p)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// billing's database is far ahead of shop's: interleaved, every shop
	// event has a lower LSN than the billing event before it.
	e.publish(t, e.event(t, "billing-1", "user", "1", pos("5/100", 0)))
	e.publish(t, fromShop("shop-1", pos("0/100", 0)))
	e.publish(t, e.event(t, "billing-2", "user", "1", pos("5/200", 0)))
	e.publish(t, fromShop("shop-2", pos("0/200", 0)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 4})
	// An older event of one producer is still stale.
	e.publish(t, fromShop("shop-old", pos("0/150", 0)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultStale: 1})
	e.waitSettled(t)

	if got, want := e.effects(t), []string{"billing-1", "shop-1", "billing-2", "shop-2"}; !slices.Equal(got, want) {
		t.Fatalf("effects=%v, want %v", got, want)
	}
	for _, id := range []string{"billing-1", "shop-1", "billing-2", "shop-2"} {
		if r := e.inbox(t, id); r == nil || r.Status != sink.StatusProcessed {
			t.Fatalf("inbox %s=%+v, want processed", id, r)
		}
	}
	if r := e.inbox(t, "shop-old"); r == nil || r.Status != sink.StatusStale {
		t.Fatalf("inbox shop-old=%+v, want stale", r)
	}
	rows, err := e.pool.Query(context.Background(), `SELECT producer || ' ' || commit_lsn::text || ' ' || event_id
		FROM jetstream_inbox_events_positions WHERE resource_type = 'user' AND resource_id = '1' ORDER BY producer`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if want := []string{"billing 5/200 billing-2", "shop 0/200 shop-2"}; !slices.Equal(got, want) {
		t.Fatalf("positions=%v, want %v", got, want)
	}
	if obs.get(sink.ResultStale) != 1 {
		t.Fatalf("stale=%d, want 1 (shop-old only)", obs.get(sink.ResultStale))
	}
}

// A message within a kilobyte of max_payload, refused by the handler: its
// dead letter, with the failure headers (a 1 kB Bridge-Error), would not fit,
// so it carries a stub body naming the event, its size and the reason; the
// message is terminated and its inbox row is dead, keeping the payload.
func TestSink_DeadLetterNearMaxPayloadCarriesAStub(t *testing.T) {
	const maxPayload = 8192
	n, _ := testutil.StartNATSWithConfig(t, "max_payload: 8192\n")
	e := newEnvOn(t, n.URL())
	reason := "refused: " + strings.Repeat("r", 2000) // cut to 1 kB in Bridge-Error
	h := &effectHandler{before: func(ev *sink.Event, call int) error {
		return &sink.PermanentError{Reason: reason}
	}}
	obs, _ := e.run(t, h, nil)

	// A body that fits with its own headers and leaves less than 1 kB.
	blob := strings.Repeat("x", maxPayload-900)
	m, err := e.builder.Build(&envelope.Row{EventID: "big", ResourceType: "user", ResourceID: "1", EventType: "user.updated",
		Payload: []byte(`{"blob":"` + blob + `"}`), Headers: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05.123456+00"},
		pos("0/10", 0))
	if err != nil {
		t.Fatal(err)
	}
	if size := envelope.HeaderSize(m.Header) + len(m.Body); size > maxPayload || size < maxPayload-1200 {
		t.Fatalf("message of %d bytes, want within 1.2 kB under %d", size, maxPayload)
	}
	e.publish(t, m)
	obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1})
	e.waitSettled(t)

	dls := e.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	var stub envelope.DLQStub
	if err := json.Unmarshal(dl.Data, &stub); err != nil {
		t.Fatalf("dead letter body %q: %v", dl.Data, err)
	}
	if stub.EventID != "big" || stub.Subject != filter || stub.Size != len(m.Body) || !stub.PayloadOmitted ||
		!strings.HasPrefix(stub.Reason, "refused: rrr") || stub.ResourceType != "user" || stub.ResourceID != "1" {
		t.Fatalf("stub=%+v, want event big, subject %s, size %d, the reason", stub, filter, len(m.Body))
	}
	if dl.Class != envelope.ClassHandler || dl.OriginalSubject != filter || dl.EventID != "big" || dl.EventType != "user.updated" {
		t.Fatalf("dead letter class %q, original subject %q, event %q", dl.Class, dl.OriginalSubject, dl.EventID)
	}
	r := e.inbox(t, "big")
	if r == nil || r.Status != sink.StatusDead || !strings.Contains(r.Error, "body left out") {
		t.Fatalf("inbox big=%+v, want dead, saying the dead letter's body was left out", r)
	}
	var kept int
	if err := e.pool.QueryRow(context.Background(), `SELECT length(payload->>'blob') FROM jetstream_inbox_events WHERE event_id = 'big'`).Scan(&kept); err != nil || kept != len(blob) {
		t.Fatalf("inbox payload blob of %d bytes (%v), want the payload kept (%d)", kept, err, len(blob))
	}
}

// Events A then B of one key; the handler refuses A for good while the DLQ
// cannot store anything. B must wait until A's dead letter is stored: it is
// applied only after, and sees A dead. Another key goes on meanwhile.
func TestSink_FailedDeadLetterKeepsItsKeyWaiting(t *testing.T) {
	e := newEnv(t)
	const late = "late.dlq" // no stream covers it until the test creates one
	tap := &logTap{t: t}
	var sawA atomic.Value
	h := &effectHandler{before: func(ev *sink.Event, call int) error {
		switch ev.Envelope.EventID {
		case "A":
			return &sink.PermanentError{Reason: "A is refused"}
		case "B":
			var st string
			if err := e.pool.QueryRow(context.Background(), `SELECT coalesce((SELECT status FROM jetstream_inbox_events WHERE event_id = 'A'), 'none')`).Scan(&st); err != nil {
				return err
			}
			sawA.Store(st)
		}
		return nil
	}}
	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.DLQSubject = late
		o.Backoff = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}
		o.AckWait = time.Second
		o.Log = zerolog.New(tap).Level(zerolog.WarnLevel)
	})
	e.publish(t, e.event(t, "A", "user", "1", pos("0/10", 0)))
	e.publish(t, e.event(t, "B", "user", "1", pos("0/20", 0)))
	e.publish(t, e.event(t, "other", "user", "2", pos("0/30", 0)))
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := tap.count("cannot publish dead letter"); n < 3 {
			return fmt.Errorf("%d failed dead-letter publishes, want 3", n)
		}
		return nil
	})
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1}) // other
	if got := e.effects(t); !slices.Equal(got, []string{"other"}) {
		t.Fatalf("effects while A's dead letter cannot be stored=%v, want [other]: B must wait behind A", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "late-dlq", Subjects: []string{late}}); err != nil {
		t.Fatal(err)
	}
	obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1, sink.ResultApplied: 2})
	e.waitSettled(t)

	if got := e.effects(t); !slices.Equal(got, []string{"other", "B"}) {
		t.Fatalf("effects=%v, want [other B]", got)
	}
	if st, _ := sawA.Load().(string); st != sink.StatusDead {
		t.Fatalf("B's handler saw A %q, want dead: B ran before A was dead-lettered", st)
	}
	if n := h.callsOf("A"); n != 1 {
		t.Fatalf("handler ran %d times for A, want 1: only its dead letter is retried", n)
	}
	var dls []*sink.DeadLetter
	if err := sink.ListDLQ(ctx, e.js, "late-dlq", late, func(dl *sink.DeadLetter) error { dls = append(dls, dl); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].EventID != "A" || dls[0].Class != envelope.ClassHandler || dls[0].Error != "A is refused" {
		t.Fatalf("dead letters=%+v, want A's (handler: A is refused)", dls)
	}
}

// A DLQ stream whose maximum message size is below the dead letter's: the
// server refuses the copy, and the sink publishes it again with a stub body.
func TestSink_DeadLetterOverStreamMaxMsgSizeCarriesAStub(t *testing.T) {
	e := newEnv(t)
	const small = "small.dlq"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "small-dlq", Subjects: []string{small}, MaxMsgSize: 4096}); err != nil {
		t.Fatal(err)
	}
	h := &effectHandler{before: func(*sink.Event, int) error { return &sink.PermanentError{Reason: "refused"} }}
	obs, _ := e.run(t, h, func(o *sink.Options) { o.DLQSubject = small })
	m, err := e.builder.Build(&envelope.Row{EventID: "big", ResourceType: "user", ResourceID: "1", EventType: "user.updated",
		Payload: []byte(`{"blob":"` + strings.Repeat("x", 5000) + `"}`), Headers: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05.123456+00"},
		pos("0/10", 0))
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, m)
	obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1})
	e.waitSettled(t)
	var dls []*sink.DeadLetter
	if err := sink.ListDLQ(ctx, e.js, "small-dlq", small, func(dl *sink.DeadLetter) error { dls = append(dls, dl); return nil }); err != nil {
		t.Fatal(err)
	}
	var stub envelope.DLQStub
	if len(dls) != 1 || json.Unmarshal(dls[0].Data, &stub) != nil || stub.EventID != "big" || stub.Size != len(m.Body) ||
		stub.Reason != "refused" || !stub.PayloadOmitted {
		t.Fatalf("dead letters=%d, stub=%+v; want one stub for big", len(dls), stub)
	}
	if r := e.inbox(t, "big"); r == nil || r.Status != sink.StatusDead || !strings.Contains(r.Error, "refused for its size") {
		t.Fatalf("inbox big=%+v, want dead, saying the dead letter was refused for its size", r)
	}
}

// The sink stops while a dead letter cannot be stored: the message and the
// events of its key behind it are handed back, in order, and the next sink
// dead-letters A before it applies B.
func TestSink_StopDuringFailedDeadLetterHandsBackTheLaneInOrder(t *testing.T) {
	e := newEnv(t)
	const late = "late.dlq"
	tap := &logTap{t: t}
	refuseA := func(ev *sink.Event, _ int) error {
		if ev.Envelope.EventID == "A" {
			return &sink.PermanentError{Reason: "A is refused"}
		}
		return nil
	}
	first := &effectHandler{before: refuseA}
	_, stop := e.run(t, first, func(o *sink.Options) {
		o.DLQSubject = late
		o.Log = zerolog.New(tap).Level(zerolog.WarnLevel)
	})
	e.publish(t, e.event(t, "A", "user", "1", pos("0/10", 0)))
	e.publish(t, e.event(t, "B", "user", "1", pos("0/20", 0)))
	e.publish(t, e.event(t, "C", "user", "1", pos("0/30", 0)))
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := tap.count("cannot publish dead letter"); n < 2 {
			return fmt.Errorf("%d failed dead-letter publishes, want 2", n)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := e.effects(t); len(got) != 0 {
		t.Fatalf("effects after the first sink=%v, want none: B and C wait behind A", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "late-dlq", Subjects: []string{late}}); err != nil {
		t.Fatal(err)
	}
	var sawA atomic.Value
	second := &effectHandler{before: func(ev *sink.Event, call int) error {
		if ev.Envelope.EventID == "B" {
			var st string
			if err := e.pool.QueryRow(context.Background(), `SELECT coalesce((SELECT status FROM jetstream_inbox_events WHERE event_id = 'A'), 'none')`).Scan(&st); err != nil {
				return err
			}
			sawA.Store(st)
		}
		return refuseA(ev, call)
	}}
	// The ack wait is 30s: everything settling well within 20s shows the
	// first sink handed the messages back rather than letting them expire.
	obs, _ := e.run(t, second, func(o *sink.Options) { o.DLQSubject = late })
	obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1, sink.ResultApplied: 2})
	e.waitSettled(t)
	if got := e.effects(t); !slices.Equal(got, []string{"B", "C"}) {
		t.Fatalf("effects=%v, want [B C]", got)
	}
	if st, _ := sawA.Load().(string); st != sink.StatusDead {
		t.Fatalf("B's handler saw A %q, want dead", st)
	}
}
