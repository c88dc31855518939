package sink_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// hookReceiver counts calls per event id, checks that every call carries
// the event id as Idempotency-Key, and answers by the event id's prefix.
type hookReceiver struct {
	mu       sync.Mutex
	calls    map[string]int
	problems []string
	onCall   func(id string, n int) // called before answering, with the call's number
}

func newHookReceiver() *hookReceiver { return &hookReceiver{calls: map[string]int{}} }

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	env, err := envelope.Parse(body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	id := env.EventID
	h.mu.Lock()
	h.calls[id]++
	n := h.calls[id]
	if got := r.Header.Get("Idempotency-Key"); got != id {
		h.problems = append(h.problems, fmt.Sprintf("%s: Idempotency-Key %q", id, got))
	}
	on := h.onCall
	h.mu.Unlock()
	if on != nil {
		on(id, n)
	}
	switch {
	case strings.HasPrefix(id, "flaky") && n == 1:
		w.WriteHeader(http.StatusServiceUnavailable)
	case strings.HasPrefix(id, "down"):
		w.WriteHeader(http.StatusInternalServerError)
	case strings.HasPrefix(id, "reject"):
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, "refused")
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (h *hookReceiver) snapshot() (map[string]int, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	calls := map[string]int{}
	for k, v := range h.calls {
		calls[k] = v
	}
	return calls, append([]string(nil), h.problems...)
}

// webhookSink starts a sink with one worker on a webhook served by recv,
// after the events are in the stream, so that they arrive together and
// share transactions.
func webhookSink(t *testing.T, e *env, recv *hookReceiver, opt func(*sink.Options)) *counter {
	t.Helper()
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	h, err := sink.NewHTTPHandler(srv.URL+"/hook", sink.HTTPOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.Concurrency, o.BatchSize, o.TxBatch = 1, 50, 25
		if opt != nil {
			opt(o)
		}
	})
	return obs
}

// Webhook events' inbox rows share transactions: several events are called
// and committed together, each called once with its Idempotency-Key and
// acked after the commit.
func TestSink_WebhookBatchesShareTransactions(t *testing.T) {
	e := newEnv(t)
	const n = 40
	for i := range n {
		e.publish(t, e.event(t, fmt.Sprintf("ok-%02d", i), "user", fmt.Sprint(i), pos("0/1", i)))
	}
	recv := newHookReceiver()
	obs := webhookSink(t, e, recv, nil)
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: n})
	e.waitSettled(t)

	calls, problems := recv.snapshot()
	if len(problems) > 0 {
		t.Fatalf("requests: %v", problems)
	}
	for i := range n {
		id := fmt.Sprintf("ok-%02d", i)
		if calls[id] != 1 {
			t.Fatalf("calls=%v, want every event called once", calls)
		}
		if r := e.inbox(t, id); r == nil || r.Status != sink.StatusProcessed || r.Attempts != 1 {
			t.Fatalf("inbox %s=%+v, want processed after one attempt", id, r)
		}
	}
	var txs int
	if err := e.pool.QueryRow(context.Background(),
		`SELECT count(DISTINCT xmin::text) FROM jetstream_inbox_events`).Scan(&txs); err != nil {
		t.Fatal(err)
	}
	if txs > n/4 {
		t.Fatalf("%d events were committed in %d transactions, want several events per transaction", n, txs)
	}
}

// In a webhook batch every event keeps the one-event path's guarantees: an
// event applied before is not called again; a failed call is retried after
// BACKOFF while the others of its batch are committed; a refused event is
// dead-lettered at once; an event failing every call is dead-lettered after
// MAX_DELIVER attempts; the failed attempts are recorded in the inbox.
func TestSink_WebhookBatchKeepsEveryGuarantee(t *testing.T) {
	e := newEnv(t)
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO jetstream_inbox_events
		(event_id, event_type, resource_type, resource_id, subject, status, processing_attempts, processed_at)
		VALUES ('dup-1', 'user.updated', 'user', '90', 'x', 'processed', 1, now())`); err != nil {
		t.Fatal(err)
	}
	msgs := map[string]envelope.Message{}
	for i, id := range []string{"ok-1", "flaky-1", "ok-2", "reject-1", "dup-1", "down-1", "ok-3"} {
		msgs[id] = e.event(t, id, "user", fmt.Sprint(i), pos("0/1", i))
		e.publish(t, msgs[id])
	}
	recv := newHookReceiver()
	obs := webhookSink(t, e, recv, func(o *sink.Options) { o.MaxDeliver = 3 })
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 4, sink.ResultDuplicate: 1, sink.ResultDead: 2})
	e.waitSettled(t)

	calls, problems := recv.snapshot()
	if len(problems) > 0 {
		t.Fatalf("requests: %v", problems)
	}
	want := map[string]int{"ok-1": 1, "ok-2": 1, "ok-3": 1, "flaky-1": 2, "reject-1": 1, "down-1": 3}
	for id, n := range want {
		if calls[id] != n {
			t.Fatalf("calls=%v, want %v and dup-1 never", calls, want)
		}
	}
	if calls["dup-1"] != 0 {
		t.Fatalf("dup-1 called %d times, want never (its inbox row is processed)", calls["dup-1"])
	}
	for id, status := range map[string]string{"ok-1": sink.StatusProcessed, "ok-2": sink.StatusProcessed, "ok-3": sink.StatusProcessed,
		"flaky-1": sink.StatusProcessed, "reject-1": sink.StatusDead, "down-1": sink.StatusDead} {
		if r := e.inbox(t, id); r == nil || r.Status != status {
			t.Fatalf("inbox %s=%+v, want %s", id, r, status)
		}
	}
	if r := e.inbox(t, "flaky-1"); r.Attempts != 2 {
		t.Fatalf("flaky-1 attempts=%d, want 2 (the failed one recorded)", r.Attempts)
	}
	if r := e.inbox(t, "down-1"); r.Attempts != 3 || !strings.Contains(r.Error, "http 500") {
		t.Fatalf("down-1=%+v, want 3 attempts and the last error", r)
	}
	dls := e.deadLetters(t)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dls))
	}
	for _, dl := range dls {
		switch strings.TrimPrefix(dl.Header.Get(envelope.HeaderMsgID), "dlq-") {
		case "reject-1":
			checkDeadLetter(t, dl, msgs["reject-1"], envelope.ClassHandler, "http 422: refused", 1)
		case "down-1":
			checkDeadLetter(t, dl, msgs["down-1"], envelope.ClassExhausted, "http 500", 3)
		default:
			t.Fatalf("unexpected dead letter %v", dl.Header)
		}
	}
	if got := obs.get(sink.ResultRetried); got != 3 {
		t.Fatalf("retried=%d, want 3 (flaky-1 once, down-1 twice)", got)
	}
}

// A commit lost after the calls (here: the connection is cut while the
// calls run, as a crash would end it) commits nothing; the events are
// applied again and the webhook is called again with the same
// Idempotency-Key: webhooks are at-least-once, deduped by that key. Each
// event ends processed once and acked.
func TestSink_WebhookCommitLostCallsAgainWithSameKey(t *testing.T) {
	e := newEnv(t)
	ids := []string{"lost-1", "lost-2", "lost-3"}
	for i, id := range ids {
		e.publish(t, e.event(t, id, "user", fmt.Sprint(i), pos("0/1", i)))
	}
	recv := newHookReceiver()
	var cut sync.Once
	recv.onCall = func(id string, n int) {
		if id != "lost-3" || n != 1 {
			return
		}
		cut.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, e.url)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close(ctx)
			// The batch's connection waits, inside its transaction, for the calls.
			var cutN int
			if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND state = 'idle in transaction' AND pid <> pg_backend_pid()`).Scan(&cutN); err != nil || cutN != 1 {
				t.Errorf("terminated %d connections inside a transaction, want 1 (%v)", cutN, err)
			}
		})
	}
	obs := webhookSink(t, e, recv, nil)
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: len(ids)})
	e.waitSettled(t)

	calls, problems := recv.snapshot()
	if len(problems) > 0 {
		t.Fatalf("requests: %v", problems)
	}
	for _, id := range ids {
		if calls[id] != 2 {
			t.Fatalf("calls=%v, want each event called twice (the first batch's commit was lost)", calls)
		}
		if r := e.inbox(t, id); r == nil || r.Status != sink.StatusProcessed || r.Attempts != 1 {
			t.Fatalf("inbox %s=%+v, want processed once", id, r)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := obs.get(sink.ResultApplied); got != len(ids) {
			return fmt.Errorf("applied=%d, want %d", got, len(ids))
		}
		return nil
	})
}

// The calls of a webhook batch run in parallel, but never more than
// CONCURRENCY at once across the workers.
func TestSink_WebhookCallsBoundedByConcurrency(t *testing.T) {
	e := newEnv(t)
	const n = 40
	for i := range n {
		e.publish(t, e.event(t, fmt.Sprintf("ok-%02d", i), "user", fmt.Sprint(i), pos("0/1", i)))
	}
	recv := newHookReceiver()
	var (
		mu            sync.Mutex
		inFlight, top int
	)
	recv.onCall = func(string, int) {
		mu.Lock()
		inFlight++
		top = max(top, inFlight)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
	}
	obs := webhookSink(t, e, recv, func(o *sink.Options) { o.Concurrency = 3 })
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: n})
	mu.Lock()
	defer mu.Unlock()
	if top > 3 || top < 2 {
		t.Fatalf("at most %d calls were in flight, want 2 or 3 (CONCURRENCY 3)", top)
	}
}
