package sink_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestSink_DuplicatePublishesApplyOnce(t *testing.T) {
	e := newEnv(t)
	h := &effectHandler{}
	obs, _ := e.run(t, h, nil)

	m := e.event(t, "e1", "user", "1", pos("0/1000", 0))
	e.publish(t, m)
	if ack := e.publish(t, m); !ack.Duplicate {
		t.Fatalf("second publish with the same Nats-Msg-Id: Duplicate=false, want true")
	}
	// The same event under another message id gets past JetStream's dedupe.
	other := nats.Header{}
	for k, v := range m.Header {
		other[k] = v
	}
	other.Set(envelope.HeaderMsgID, "another-id")
	e.publishRaw(t, m.Subject, m.Body, other)
	e.publish(t, e.event(t, "e2", "user", "2", pos("0/1000", 1)))

	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 2, sink.ResultDuplicate: 1})
	e.waitSettled(t)
	got := e.effects(t)
	if count(got, "e1") != 1 || count(got, "e2") != 1 || len(got) != 2 {
		t.Fatalf("effects=%v, want e1 and e2 once each", got)
	}
	if n := h.callsOf("e1"); n != 1 {
		t.Fatalf("handler ran %d times for e1, want 1", n)
	}
	r := e.inbox(t, "e1")
	if r == nil || r.Status != sink.StatusProcessed || r.Attempts != 1 || !r.ProcessedSet {
		t.Fatalf("inbox e1=%+v, want processed after 1 attempt", r)
	}
	if r.CommitLSN == nil || *r.CommitLSN != "0/1000" || r.TxIndex == nil || *r.TxIndex != 0 || r.StreamSeq == nil || r.Deliveries != 1 {
		t.Fatalf("inbox e1 position/stream: %+v", r)
	}
}

func TestSink_RetriesWithBackoffThenApplies(t *testing.T) {
	e := newEnv(t)
	var times []time.Time
	h := &effectHandler{before: func(ev *sink.Event, call int) error {
		if ev.Envelope.EventID != "flaky" {
			return nil
		}
		times = append(times, time.Now()) // one worker at a time holds this key
		if call <= 2 {
			return fmt.Errorf("temporary failure %d", call)
		}
		return nil
	}}
	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.Backoff = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}
	})
	e.publish(t, e.event(t, "flaky", "user", "1", pos("0/10", 0)))
	e.publish(t, e.event(t, "other", "user", "2", pos("0/10", 1)))

	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 2})
	e.waitSettled(t)
	if got := e.effects(t); count(got, "flaky") != 1 || slices.Index(got, "other") > slices.Index(got, "flaky") {
		t.Fatalf("effects=%v, want flaky once, after other (which did not wait for it)", got)
	}
	if len(times) != 3 {
		t.Fatalf("flaky attempts=%d, want 3", len(times))
	}
	if d := times[1].Sub(times[0]); d < 100*time.Millisecond {
		t.Fatalf("second attempt after %s, want >= 100ms (BACKOFF[0])", d)
	}
	if d := times[2].Sub(times[1]); d < 200*time.Millisecond {
		t.Fatalf("third attempt after %s, want >= 200ms (BACKOFF[1])", d)
	}
	r := e.inbox(t, "flaky")
	if r.Status != sink.StatusProcessed || r.Attempts != 3 || !contains(r.Error, "temporary failure 2") {
		t.Fatalf("inbox flaky=%+v, want processed, 3 attempts, last error kept", r)
	}
	if got := obs.get(sink.ResultRetried); got != 2 {
		t.Fatalf("retried=%d, want 2", got)
	}
}

func TestSink_ExhaustedGoesToDLQ(t *testing.T) {
	e := newEnv(t)
	h := &effectHandler{before: func(ev *sink.Event, call int) error {
		if ev.Envelope.EventID == "doomed" {
			return fmt.Errorf("boom %d", call)
		}
		return nil
	}}
	obs, _ := e.run(t, h, func(o *sink.Options) { o.MaxDeliver = 3 })
	m := e.event(t, "doomed", "user", "1", pos("1/A0", 2))
	e.publish(t, m)
	e.publish(t, e.event(t, "fine", "user", "2", pos("1/A0", 3)))

	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1, sink.ResultDead: 1})
	e.waitSettled(t)
	if n := h.callsOf("doomed"); n != 3 {
		t.Fatalf("handler ran %d times for doomed, want MAX_DELIVER=3", n)
	}
	if got := e.effects(t); !slices.Equal(got, []string{"fine"}) {
		t.Fatalf("effects=%v, want only fine", got)
	}
	dls := e.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	checkDeadLetter(t, dl, m, envelope.ClassExhausted, "boom 3", 3)
	if got := dl.Header.Get(envelope.HeaderCommitLSN); got != "1/A0" {
		t.Fatalf("dead letter lost the original headers: Bridge-Commit-LSN=%q", got)
	}
	if got := dl.Header.Get("x-test"); got != "yes" {
		t.Fatalf("dead letter lost the row header x-test: %q", got)
	}
	r := e.inbox(t, "doomed")
	if r == nil || r.Status != sink.StatusDead || r.Attempts != 3 || !contains(r.Error, "boom 3") {
		t.Fatalf("inbox doomed=%+v, want dead after 3 attempts", r)
	}
}

// checkDeadLetter checks the dead letter of m against every Bridge-* header.
func checkDeadLetter(t *testing.T, dl *sink.DeadLetter, m envelope.Message, class, errPart string, deliveries int) {
	t.Helper()
	h := dl.Header
	if got := h.Get(envelope.HeaderErrorClass); got != class {
		t.Fatalf("Bridge-Error-Class=%q, want %q", got, class)
	}
	if got := h.Get(envelope.HeaderError); !contains(got, errPart) {
		t.Fatalf("Bridge-Error=%q, want it to contain %q", got, errPart)
	}
	if got := h.Get(envelope.HeaderOriginalSubject); got != m.Subject {
		t.Fatalf("Bridge-Original-Subject=%q, want %q", got, m.Subject)
	}
	if got, want := h.Get(envelope.HeaderDeliveries), strconv.Itoa(deliveries); got != want {
		t.Fatalf("Bridge-Deliveries=%q, want %q", got, want)
	}
	failedAt, err := time.Parse(time.RFC3339Nano, h.Get(envelope.HeaderFailedAt))
	if err != nil || time.Since(failedAt) > time.Minute || time.Since(failedAt) < 0 {
		t.Fatalf("Bridge-Failed-At=%q (%v), want a recent RFC 3339 time", h.Get(envelope.HeaderFailedAt), err)
	}
	if got, want := h.Get(envelope.HeaderMsgID), envelope.DLQPrefix+m.MsgID; got != want {
		t.Fatalf("Nats-Msg-Id=%q, want %q", got, want)
	}
	if !bytes.Equal(dl.Data, m.Body) {
		t.Fatalf("dead letter body=%s, want the original %s", dl.Data, m.Body)
	}
}

func TestSink_PoisonGoesToDLQAtOnce(t *testing.T) {
	e := newEnv(t)
	h := &effectHandler{}
	obs, _ := e.run(t, h, nil)
	id := func(s string) nats.Header { return nats.Header{envelope.HeaderMsgID: []string{s}} }
	poison := []struct {
		id, body string
	}{
		{"p-notjson", `not json at all`},
		{"p-noenvelope", `{"event_id":"p-noenvelope"}`},
		{"p-empty", ``},
		// Valid JSON that Postgres refuses to store (jsonb has no \u0000).
		{"p-nul", `{"event_id":"p-nul","event_type":"user.updated","payload":{"a":"\u0000"}}`},
		{"", `[1,2,3]`}, // no id at all
	}
	var noIDSeq uint64
	for _, p := range poison {
		h := id(p.id)
		if p.id == "" {
			h = nil
		}
		if ack := e.publishRaw(t, filter, []byte(p.body), h); p.id == "" {
			noIDSeq = ack.Sequence
		}
	}
	good := e.event(t, "good", "user", "1", envelope.Position{})
	e.publish(t, good)

	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1, sink.ResultDead: len(poison)})
	e.waitSettled(t)
	if got := h.callLog(); !slices.Equal(got, []string{"good"}) {
		t.Fatalf("handler calls=%v, want only good", got)
	}
	dls := e.deadLetters(t)
	if len(dls) != len(poison) {
		t.Fatalf("%d dead letters, want %d", len(dls), len(poison))
	}
	byID := map[string]*sink.DeadLetter{}
	for _, dl := range dls {
		byID[dl.Header.Get(envelope.HeaderMsgID)] = dl
	}
	for _, p := range poison {
		wantID := envelope.DLQPrefix + p.id
		if p.id == "" {
			wantID = envelope.DLQPrefix + streamName + "-" + strconv.FormatUint(noIDSeq, 10) // deterministic
		}
		dl := byID[wantID]
		if dl == nil {
			t.Fatalf("no dead letter with Nats-Msg-Id %q among %v", wantID, byID)
		}
		if dl.Class != envelope.ClassPoison || dl.Deliveries != 1 || dl.OriginalSubject != filter || string(dl.Data) != p.body {
			t.Fatalf("dead letter %s: class=%q deliveries=%d subject=%q body=%q", wantID, dl.Class, dl.Deliveries, dl.OriginalSubject, dl.Data)
		}
		if p.id != "" {
			if r := e.inbox(t, p.id); r == nil || r.Status != sink.StatusDead || r.Error == "" {
				t.Fatalf("inbox %s=%+v, want dead with a reason", p.id, r)
			}
		}
	}
	if got := byID["dlq-p-nul"].Error; !contains(got, "SQLSTATE 22") {
		t.Fatalf("NUL payload reason=%q, want the Postgres refusal", got)
	}
}

func TestSink_KeyOrderHoldsWhileRetrying(t *testing.T) {
	e := newEnv(t)
	const keys, perKey = 6, 5
	var others atomic.Int32 // events of keys 2..6 handled
	h := &effectHandler{before: func(ev *sink.Event, call int) error {
		id := ev.Envelope.EventID
		if id[:3] != "k1-" {
			others.Add(1)
			return nil
		}
		// k1-1 keeps failing until every other key is done: those keys must
		// not wait for it; k1-2.. must.
		if id == "k1-1" && (call <= 2 || others.Load() < (keys-1)*perKey) {
			return errors.New("not yet")
		}
		return nil
	}}
	obs, _ := e.run(t, h, func(o *sink.Options) {
		o.Concurrency = 4
		o.MaxDeliver = 100
		o.Backoff = []time.Duration{50 * time.Millisecond}
	})
	for i := range perKey {
		for k := 1; k <= keys; k++ {
			e.publish(t, e.event(t, fmt.Sprintf("k%d-%d", k, i+1), "user", strconv.Itoa(k), pos("0/5000", i*keys+k)))
		}
	}
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: keys * perKey})
	e.waitSettled(t)

	got := e.effects(t)
	for k := 1; k <= keys; k++ {
		var order []string
		for _, id := range got {
			if id[:len(fmt.Sprintf("k%d-", k))] == fmt.Sprintf("k%d-", k) {
				order = append(order, id)
			}
		}
		want := make([]string, perKey)
		for i := range want {
			want[i] = fmt.Sprintf("k%d-%d", k, i+1)
		}
		if !slices.Equal(order, want) {
			t.Fatalf("key %d applied in order %v, want %v", k, order, want)
		}
	}
	calls := h.callLog()
	firstFail := slices.Index(calls, "k1-1")
	success := firstFail
	for i, c := range calls {
		if c == "k1-1" {
			success = i
		}
	}
	if n := h.callsOf("k1-1"); n < 3 {
		t.Fatalf("k1-1 attempts=%d, want at least 3", n)
	}
	if i := slices.Index(calls, "k1-2"); i < success {
		t.Fatalf("k1-2 ran (call %d) before k1-1 succeeded (call %d): %v", i, success, calls)
	}
	// Every other key was applied while k1-1 was held in retries (k1-1 only
	// succeeds after them): a blocked key does not block the others.
	for _, c := range calls[success:] {
		if c[:3] != "k1-" {
			t.Fatalf("%s ran after k1-1 succeeded: %v", c, calls)
		}
	}
}

func TestSink_SkipStaleRecordsOlderEvents(t *testing.T) {
	e := newEnv(t)
	h := &effectHandler{}
	obs, _ := e.run(t, h, func(o *sink.Options) { o.SkipStale = true })

	e.publish(t, e.event(t, "newer", "user", "1", pos("0/200", 0)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1})
	// Re-published out of order: an older position of the same key.
	e.publish(t, e.event(t, "older", "user", "1", pos("0/100", 5)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultStale: 1})
	e.publish(t, e.event(t, "newest", "user", "1", pos("0/200", 1)))
	e.publish(t, e.event(t, "gem", "user", "1", envelope.Position{})) // no position: never stale
	e.publish(t, e.event(t, "other-key", "user", "2", pos("0/50", 0)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 4})
	e.waitSettled(t)

	if n := h.callsOf("older"); n != 0 {
		t.Fatalf("handler ran %d times for the stale event, want 0", n)
	}
	// Key user/1 in stream order; user/2 runs in parallel, so only its
	// presence is checked.
	got := e.effects(t)
	key1 := slices.DeleteFunc(slices.Clone(got), func(id string) bool { return id == "other-key" })
	if !slices.Equal(key1, []string{"newer", "newest", "gem"}) || !slices.Contains(got, "other-key") || len(got) != 4 {
		t.Fatalf("effects=%v", got)
	}
	if r := e.inbox(t, "older"); r == nil || r.Status != sink.StatusStale || r.CommitLSN == nil || *r.CommitLSN != "0/100" {
		t.Fatalf("inbox older=%+v, want stale at 0/100", r)
	}
	var lsn, id string
	var idx int
	if err := e.pool.QueryRow(context.Background(), `SELECT commit_lsn::text, tx_index, event_id FROM jetstream_inbox_events_positions
		WHERE resource_type = 'user' AND resource_id = '1'`).Scan(&lsn, &idx, &id); err != nil {
		t.Fatal(err)
	}
	if lsn != "0/200" || idx != 1 || id != "newest" {
		t.Fatalf("position of user/1 = %s#%d (%s), want 0/200#1 (newest)", lsn, idx, id)
	}
}

func TestSink_ShutdownFinishesInFlightAndHandsBackTheRest(t *testing.T) {
	e := newEnv(t)
	started := make(chan struct{})
	release := make(chan struct{})
	h := &effectHandler{before: func(ev *sink.Event, call int) error {
		if ev.Envelope.EventID == "slow" {
			close(started)
			<-release
		}
		return nil
	}}
	_, stop := e.run(t, h, nil)
	e.publish(t, e.event(t, "slow", "user", "1", pos("0/1", 0)))
	for i := range 5 { // queued behind slow, same key: fetched, not started
		e.publish(t, e.event(t, fmt.Sprintf("behind-%d", i), "user", "1", pos("0/1", i+1)))
	}
	<-started
	testutil.Eventually(t, 10*time.Second, func() error {
		info, err := e.info()
		if err != nil {
			return err
		}
		if info.NumAckPending != 6 {
			return fmt.Errorf("%d delivered, want all 6 fetched", info.NumAckPending)
		}
		return nil
	})
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while a handler was still running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := e.effects(t); !slices.Equal(got, []string{"slow"}) {
		t.Fatalf("effects after shutdown=%v, want the in-flight event only", got)
	}
	// The rest were handed back: a new sink gets them at once, long before
	// the 30s ack wait would have redelivered them.
	obs, _ := e.run(t, &effectHandler{}, nil)
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 5})
	e.waitSettled(t)
	got := e.effects(t)
	want := []string{"slow", "behind-0", "behind-1", "behind-2", "behind-3", "behind-4"}
	if !slices.Equal(got, want) {
		t.Fatalf("effects=%v, want %v", got, want)
	}
}

// While the dead letter cannot be stored, the message is held (heartbeats
// keep it from being redelivered) and its publish retried; it is never
// terminated without a copy, and its inbox row is not marked dead.
func TestSink_DLQUnavailableHoldsInsteadOfTerminating(t *testing.T) {
	e := newEnv(t)
	tap := &logTap{t: t}
	obs, _ := e.run(t, &effectHandler{}, func(o *sink.Options) {
		o.DLQSubject = "nowhere.dlq" // no stream stores it: the publish fails
		o.Backoff = []time.Duration{50 * time.Millisecond}
		o.AckWait = time.Second // heartbeats every third of it
		o.Log = zerolog.New(tap).Level(zerolog.WarnLevel)
	})
	e.publishRaw(t, filter, []byte("garbage"), nats.Header{envelope.HeaderMsgID: []string{"g1"}})
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := tap.count("cannot publish dead letter"); n < 4 {
			return fmt.Errorf("%d failed dead-letter publishes, want 4", n)
		}
		return nil
	})
	info, err := e.info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer != 1 || info.NumAckPending != 1 {
		t.Fatalf("delivered %d, awaiting ack %d; want it held: delivered once, unacked", info.Delivered.Consumer, info.NumAckPending)
	}
	if got := obs.get(sink.ResultDead); got != 0 {
		t.Fatalf("dead=%d, want 0: nothing is terminated without a dead letter", got)
	}
	if r := e.inbox(t, "g1"); r != nil {
		t.Fatalf("inbox g1=%+v, want no dead row before the dead letter is stored", r)
	}
}

func TestSink_UseDLQFalseMarksDeadAndTerminates(t *testing.T) {
	e := newEnv(t)
	obs, _ := e.run(t, &effectHandler{}, func(o *sink.Options) { o.UseDLQ = false })
	e.publishRaw(t, filter, []byte("garbage"), nats.Header{envelope.HeaderMsgID: []string{"g1"}})
	obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1})
	e.waitSettled(t)
	if dls := e.deadLetters(t); len(dls) != 0 {
		t.Fatalf("%d dead letters with USE_DLQ=false, want 0", len(dls))
	}
	if r := e.inbox(t, "g1"); r == nil || r.Status != sink.StatusDead {
		t.Fatalf("inbox g1=%+v, want dead", r)
	}
}

func TestSink_ReplayedDeadLetterIsAppliedAgain(t *testing.T) {
	e := newEnv(t)
	var fixed atomic.Bool
	h := &effectHandler{before: func(ev *sink.Event, _ int) error {
		if !fixed.Load() {
			return sink.Permanent("refused for now")
		}
		return nil
	}}
	obs, _ := e.run(t, h, func(o *sink.Options) { o.Concurrency = 1 })
	m := e.event(t, "r1", "user", "1", pos("0/1", 0))
	e.publish(t, m)
	obs.waitFor(t, map[sink.Result]int{sink.ResultDead: 1})
	e.waitSettled(t)
	dls := e.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	checkDeadLetter(t, dls[0], m, envelope.ClassHandler, "refused for now", 1)

	fixed.Store(true)
	msg, err := sink.ReplayMessage(dls[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get(envelope.HeaderMsgID), "replay-r1-"+strconv.FormatUint(dls[0].Sequence, 10); got != want {
		t.Fatalf("replay Nats-Msg-Id=%q, want %q", got, want)
	}
	for _, k := range []string{envelope.HeaderError, envelope.HeaderErrorClass, envelope.HeaderOriginalSubject,
		envelope.HeaderDeliveries, envelope.HeaderFailedAt} {
		if msg.Header.Get(k) != "" {
			t.Fatalf("replay kept %s", k)
		}
	}
	if msg.Subject != filter || msg.Header.Get(envelope.HeaderCommitLSN) != "0/1" {
		t.Fatalf("replay subject=%q headers=%v", msg.Subject, msg.Header)
	}
	e.publishRaw(t, msg.Subject, msg.Data, msg.Header)
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1})
	if got := e.effects(t); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("effects=%v, want r1 applied by the replay", got)
	}
	if r := e.inbox(t, "r1"); r.Status != sink.StatusProcessed {
		t.Fatalf("inbox r1=%+v, want processed", r)
	}
}

// TestSink_HeartbeatsKeepHeldMessages: with a 1s ack wait, a handler taking
// 2.5s and a message waiting behind it in its lane are neither redelivered:
// every held message gets InProgress heartbeats.
func TestSink_HeartbeatsKeepHeldMessages(t *testing.T) {
	e := newEnv(t)
	spec := consumerSpec()
	spec.AckWait, spec.Backoff = time.Second, []time.Duration{time.Second}
	e.ensureConsumer(t, spec)
	h := &effectHandler{before: func(ev *sink.Event, _ int) error {
		if ev.Envelope.EventID == "slow" {
			time.Sleep(2500 * time.Millisecond) // the handler is slow: that is the point
		}
		return nil
	}}
	obs, _ := e.run(t, h, nil)
	e.publish(t, e.event(t, "slow", "user", "1", pos("0/1", 0)))
	e.publish(t, e.event(t, "waiting", "user", "1", pos("0/1", 1)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 2})
	e.waitSettled(t)
	info, err := e.info()
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.Delivered.Consumer != 2 || obs.get(sink.ResultDuplicate) != 0 {
		t.Fatalf("redelivered %d, delivered %d times, %d duplicates; want each message delivered once",
			info.NumRedelivered, info.Delivered.Consumer, obs.get(sink.ResultDuplicate))
	}
	if got := e.effects(t); !slices.Equal(got, []string{"slow", "waiting"}) {
		t.Fatalf("effects=%v", got)
	}
}

// latencies records what a LatencyObserver is told.
type latencies struct {
	*counter
	mu           sync.Mutex
	stored, held []time.Duration
}

func (l *latencies) Applied(sinceStored, sinceReceived time.Duration) {
	l.mu.Lock()
	l.stored, l.held = append(l.stored, sinceStored), append(l.held, sinceReceived)
	l.mu.Unlock()
}

// An applied event is timed from its store in the stream and from its
// arrival in the sink to its ack; the time it waits behind its key's
// earlier event counts.
func TestSink_LatencyCountsTheWaitBehindTheKey(t *testing.T) {
	e := newEnv(t)
	const slow = 300 * time.Millisecond
	h := sink.HandlerFunc(func(ctx context.Context, _ pgx.Tx, ev *sink.Event) error {
		select {
		case <-time.After(slow):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	obs := &latencies{counter: &counter{m: map[sink.Result]int{}}}
	e.run(t, h, func(o *sink.Options) { o.Observer = obs })
	e.publish(t, e.event(t, "first", "user", "1", pos("0/1000", 0)))
	e.publish(t, e.event(t, "second", "user", "1", pos("0/1000", 1)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 2})

	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.held) != 2 {
		t.Fatalf("%d latency observations, want 2", len(obs.held))
	}
	held := slices.Clone(obs.held)
	slices.Sort(held)
	if held[0] < slow || held[1] < 2*slow {
		t.Errorf("held %v: want ≥ %v for the first and ≥ %v for the second, which waited behind it", held, slow, 2*slow)
	}
	for i := range obs.held {
		if obs.stored[i] < obs.held[i] {
			t.Errorf("observation %d: %v since stored < %v since received", i, obs.stored[i], obs.held[i])
		}
	}
}
