package sink_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestSink_BatchTracesOneSpanPerEvent: events of different traces applied
// in batches (a SQL handler) each get their own apply span, the child of
// their own message's traceparent, marked processed; an event the handler
// refuses gets an apply span marked dead and a dead letter's span in its
// trace.
func TestSink_BatchTracesOneSpanPerEvent(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `CREATE PROCEDURE public.apply(e jsonb) LANGUAGE plpgsql AS $$
		BEGIN
		  IF e->'payload'->>'mode' = 'refuse' THEN
		    RAISE EXCEPTION 'refused %', e->>'event_id' USING ERRCODE = 'JBDLQ';
		  END IF;
		  INSERT INTO effects (event_id) VALUES (e->>'event_id');
		END $$`)
	h, err := sink.NewSQLHandler(context.Background(), e.pool, "public.apply")
	if err != nil {
		t.Fatal(err)
	}
	// Event i is in trace 000…0i, its message sent by span 00…0i.
	const n = 12
	traceOf := func(i int) (trace, span string) { return fmt.Sprintf("%032x", i+1), fmt.Sprintf("%016x", i+1) }
	for i := range n + 1 {
		mode, id := "", fmt.Sprintf("ev-%02d", i)
		if i == n {
			mode, id = "refuse", "refused"
		}
		tr, sp := traceOf(i)
		m, err := e.builder.Build(&envelope.Row{EventID: id, ResourceType: "user", ResourceID: fmt.Sprint(i), EventType: "user.updated",
			Payload: []byte(fmt.Sprintf(`{"mode":%q}`, mode)), Headers: []byte(`{"traceparent":"00-` + tr + `-` + sp + `-01"}`),
			OccurredAt: "2026-01-02 03:04:05+00"}, pos("0/1000", i))
		if err != nil {
			t.Fatal(err)
		}
		e.publish(t, m)
	}

	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.Concurrency, o.BatchSize, o.Tracer = 1, 20, tp.Tracer("test")
	})
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: n, sink.ResultDead: 1})

	processed := map[string]int{} // event id → processed spans
	batched := 0
	var refusedDead, dlqSpan bool
	testutil.Eventually(t, 10*time.Second, func() error {
		processed, batched, refusedDead, dlqSpan = map[string]int{}, 0, false, false
		for _, s := range spans.GetSpans() {
			attrs := map[string]string{}
			for _, kv := range s.Attributes {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			id := attrs["messaging.message.id"]
			i := n
			if id != "refused" {
				fmt.Sscanf(id, "ev-%d", &i)
			}
			tr, sp := traceOf(i)
			if s.SpanContext.TraceID().String() != tr || s.Parent.SpanID().String() != sp || !s.Parent.IsRemote() {
				return fmt.Errorf("span %s of %s: trace %s parent %s, want %s %s", s.Name, id, s.SpanContext.TraceID(), s.Parent.SpanID(), tr, sp)
			}
			switch {
			case s.Name == "publish "+dlqSubject:
				dlqSpan = id == "refused"
			case attrs["jetstream_bridge.status"] == "processed":
				processed[id]++
				if attrs["jetstream_bridge.batch_size"] != "" {
					batched++
				}
			case attrs["jetstream_bridge.status"] == "dead":
				refusedDead = id == "refused" && attrs["jetstream_bridge.handler"] == "sql:public.apply"
			}
		}
		if len(processed) != n || !refusedDead || !dlqSpan {
			return fmt.Errorf("processed %v, refused dead %v, dead letter span %v", processed, refusedDead, dlqSpan)
		}
		return nil
	})
	for id, c := range processed {
		if c != 1 {
			t.Errorf("%s has %d processed spans, want 1", id, c)
		}
	}
	if batched == 0 {
		t.Error("no span of a batched apply: the test did not batch")
	}
}

// TestSink_WebhookBatchTracesEachCall: webhook events applied in one inbox
// transaction each get their own apply span, the child of their message's
// traceparent, and their call carries a traceparent of a span inside that
// apply span, so the receiver's work joins the event's trace.
func TestSink_WebhookBatchTracesEachCall(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	got := map[string]string{} // event id → traceparent the receiver saw
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Header.Get("Idempotency-Key")] = r.Header.Get("traceparent")
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	h, err := sink.NewHTTPHandler(srv.URL, sink.HTTPOptions{Timeout: 5 * time.Second, Tracer: tp.Tracer("test")})
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	traceOf := func(i int) (trace, span string) { return fmt.Sprintf("%032x", i+1), fmt.Sprintf("%016x", i+1) }
	for i := range n {
		tr, sp := traceOf(i)
		m, err := e.builder.Build(&envelope.Row{EventID: fmt.Sprintf("ev-%02d", i), ResourceType: "user", ResourceID: fmt.Sprint(i),
			EventType: "user.updated", Payload: []byte(`{}`), Headers: []byte(`{"traceparent":"00-` + tr + `-` + sp + `-01"}`),
			OccurredAt: "2026-01-02 03:04:05+00"}, pos("0/1000", i))
		if err != nil {
			t.Fatal(err)
		}
		e.publish(t, m)
	}
	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.Concurrency, o.BatchSize, o.Tracer = 1, 20, tp.Tracer("test")
	})
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: n})

	testutil.Eventually(t, 10*time.Second, func() error {
		byID := map[string]tracetest.SpanStub{}
		for _, s := range spans.GetSpans() {
			byID[s.SpanContext.SpanID().String()] = s
		}
		mu.Lock()
		defer mu.Unlock()
		batched := 0
		for i := range n {
			id := fmt.Sprintf("ev-%02d", i)
			tr, sp := traceOf(i)
			tp := got[id]
			if len(tp) != 55 || tp[3:35] != tr {
				return fmt.Errorf("%s: receiver saw traceparent %q, want trace %s", id, tp, tr)
			}
			call, ok := byID[tp[36:52]]
			if !ok {
				return fmt.Errorf("%s: the call's span %s was not exported", id, tp[36:52])
			}
			apply, ok := byID[call.Parent.SpanID().String()]
			if !ok || apply.Parent.SpanID().String() != sp {
				return fmt.Errorf("%s: the call's span is not inside the event's apply span", id)
			}
			for _, kv := range apply.Attributes {
				if kv.Key == "jetstream_bridge.batch_size" {
					batched++
				}
			}
		}
		if batched == 0 {
			return fmt.Errorf("no apply span of a batch: the test did not batch")
		}
		return nil
	})
}
