package publish_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// batchRig is a publisher with fast batches on a stream "s" (subjects s.>).
type batchRig struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	p      *publish.Publisher
	rec    *recorder
	dups   map[string]bool
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

// newBatchRig creates the stream with cfg (Name and Subjects are set here)
// and a publisher whose Batch says yes to s.> when the stream allows
// batches, or always when force is set.
func newBatchRig(t *testing.T, js jetstream.JetStream, cfg jetstream.StreamConfig, force bool, opts publish.Options) *batchRig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg.Name, cfg.Subjects = "s", []string{"s.>"}
	s, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &batchRig{js: js, stream: s, rec: &recorder{}, dups: map[string]bool{}, cancel: cancel, done: make(chan error, 1)}
	opts.Log = zerolog.Nop()
	opts.Acked = func(m *publish.Message, ack *jetstream.PubAck) {
		r.rec.Acked(m, ack)
		if ack.Duplicate {
			r.mu.Lock()
			r.dups[m.MsgID] = true
			r.mu.Unlock()
		}
	}
	opts.Batch = publish.BatchSubjects(s.CachedInfo(), js.Conn().ConnectedServerVersion())
	if force {
		opts.Batch = func(string) bool { return true }
	}
	r.p = publish.New(js, opts)
	go func() { r.done <- r.p.Run(ctx) }()
	return r
}

// publishAll publishes ids as one burst per chunk: Ahead counts the messages
// left in the chunk.
func (r *batchRig) publishAll(t *testing.T, ids []string, chunk int, edit func(*publish.Message)) {
	t.Helper()
	for i, id := range ids {
		m := msg("s.x", id)
		m.Ahead = min(chunk-1-i%chunk, len(ids)-1-i)
		if edit != nil {
			edit(m)
		}
		if err := r.p.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
}

func (r *batchRig) waitAcked(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() error {
		if got := r.rec.count(); got != n {
			return fmt.Errorf("%d of %d acked", got, n)
		}
		return nil
	})
}

// streamIDs is the Nats-Msg-Id of every stored message, in stream order.
func (r *batchRig) streamIDs(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	info, err := r.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := r.stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.Header.Get("Nats-Msg-Id"))
	}
	return ids
}

func seqIDs(from, to int) []string {
	ids := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		ids = append(ids, fmt.Sprint(i))
	}
	return ids
}

// checkOrder fails unless got equals want element by element.
func checkOrder(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: entry %d is %s, want %s", what, i, got[i], want[i])
		}
	}
}

// TestFastBatchStoresEveryMessageOnceInOrder: bursts of various sizes, the
// long ones as fast batches; every message is acked once, in submission order, and the
// stream holds each once, in submission order.
func TestFastBatchStoresEveryMessageOnceInOrder(t *testing.T) {
	r := newBatchRig(t, testutil.ConnectJS(t, testutil.StartNATS(t).URL()), jetstream.StreamConfig{AllowBatchPublish: true}, false, publish.Options{MaxInflight: 256})
	ids := seqIDs(0, 6000)
	for i, chunk := range []int{1, 3, 97, 2000} { // a quarter of the messages each
		r.publishAll(t, ids[i*1500:(i+1)*1500], chunk, nil)
	}
	r.waitAcked(t, len(ids))
	checkOrder(t, "acks", r.rec.acked, ids)
	checkOrder(t, "stream", r.streamIDs(t), ids)
	// Bursts shorter than BatchMinAhead go one by one; the longer ones are
	// batched whole (once the first ack is in).
	if b := r.p.Batched(); b < 2800 || b > 3000 {
		t.Fatalf("%d messages went in fast batches, want the bursts of 97 and 2000 (3000)", b)
	}
}

// TestFastBatchSurvivesServerRestart: a restart in the middle of a batch
// loses no message and stores none twice or out of order.
func TestFastBatchSurvivesServerRestart(t *testing.T) {
	srv := testutil.StartNATS(t)
	js := testutil.ConnectJS(t, srv.URL(), testutil.Reconnecting...)
	r := newBatchRig(t, js, jetstream.StreamConfig{AllowBatchPublish: true, Storage: jetstream.FileStorage}, false,
		publish.Options{MaxInflight: 256, AckTimeout: 2 * time.Second})
	ids := seqIDs(0, 4000)
	r.publishAll(t, ids[:1500], 1000, nil)
	batchedBefore := r.p.Batched()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	r.publishAll(t, ids[1500:], 1000, nil)
	r.waitAcked(t, len(ids))
	if batchedBefore == 0 || r.p.Batched() == batchedBefore {
		t.Fatalf("batched %d before the restart and %d in all: want batches on both sides", batchedBefore, r.p.Batched())
	}
	checkOrder(t, "acks", r.rec.acked, ids)
	checkOrder(t, "stream", r.streamIDs(t), ids)
}

// TestFastBatchRefusedMessageInTheMiddle: a message the stream refuses (too
// large) in the middle of a batch is dead-lettered; every other message is
// stored once, in submission order (the dead letter comes when the refusal
// is handled, as with single publishes).
func TestFastBatchRefusedMessageInTheMiddle(t *testing.T) {
	var mu sync.Mutex
	var refused []string
	r := newBatchRig(t, testutil.ConnectJS(t, testutil.StartNATS(t).URL()), jetstream.StreamConfig{AllowBatchPublish: true, MaxMsgSize: 512}, false, publish.Options{
		MaxInflight: 256,
		Rejected: func(m *publish.Message, err error) (*publish.Message, error) {
			mu.Lock()
			refused = append(refused, m.MsgID)
			mu.Unlock()
			return &publish.Message{Subject: "s.dlq", Body: []byte(`{}`),
				Header: nats.Header{"Nats-Msg-Id": []string{"dlq-" + m.MsgID}, "Bridge-Error": []string{err.Error()}}}, nil
		}})
	r.publishAll(t, seqIDs(0, 10), 10, nil) // batches start once a message was stored
	r.waitAcked(t, 10)
	ids := seqIDs(10, 400)
	r.publishAll(t, ids, len(ids), func(m *publish.Message) {
		if m.MsgID == "200" {
			m.Body = make([]byte, 2048)
		}
	})
	r.waitAcked(t, 400)
	// The burst is batched up to the refusal at least; what is submitted
	// after it was reported is held back and republished one by one.
	if b := r.p.Batched(); b < 191 || b > 390 {
		t.Fatalf("%d messages batched, want 191 to 390", b)
	}
	if fmt.Sprint(refused) != "[200]" || fmt.Sprint(r.rec.dead) != "[200]" {
		t.Fatalf("refused %v, dead letters %v: want exactly 200", refused, r.rec.dead)
	}
	checkOrder(t, "acks", r.rec.acked, seqIDs(0, 400))
	var stored []string
	dead := 0
	for _, id := range r.streamIDs(t) {
		if id == "dlq-200" {
			dead++
			continue
		}
		stored = append(stored, id)
	}
	if dead != 1 {
		t.Fatalf("the dead letter is stored %d times, want once", dead)
	}
	checkOrder(t, "stream", stored, append(seqIDs(0, 200), seqIDs(201, 400)...))
}

// TestFastBatchFallsBackWhenTheStreamRefusesBatches: told to batch for a
// stream without allow_batched, the publisher loses nothing and goes on with
// one ack per message.
func TestFastBatchFallsBackWhenTheStreamRefusesBatches(t *testing.T) {
	r := newBatchRig(t, testutil.ConnectJS(t, testutil.StartNATS(t).URL()), jetstream.StreamConfig{}, true, publish.Options{MaxInflight: 256})
	r.publishAll(t, seqIDs(0, 5), 5, nil)
	r.waitAcked(t, 5)
	ids := seqIDs(0, 3000)
	r.publishAll(t, ids[5:], 500, nil)
	r.waitAcked(t, len(ids))
	checkOrder(t, "acks", r.rec.acked, ids)
	checkOrder(t, "stream", r.streamIDs(t), ids)
	if b := r.p.Batched(); b == 0 || b > 256 {
		t.Fatalf("%d messages sent in batches: want the first batch only (at most a window)", b)
	}
}

// TestFastBatchAfterARestartReportsDuplicates: a restarted relay re-sends
// what it had published. Those go one by one, so each is reported as a
// duplicate (and no batch breaks on them); batching resumes with the first
// new message.
func TestFastBatchAfterARestartReportsDuplicates(t *testing.T) {
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	first := newBatchRig(t, js, jetstream.StreamConfig{AllowBatchPublish: true, Duplicates: time.Minute}, false, publish.Options{MaxInflight: 256})
	first.publishAll(t, seqIDs(0, 1000), 1000, nil)
	first.waitAcked(t, 1000)
	first.cancel()
	<-first.done

	// The same stream, a new publisher: as after a restart.
	r := &batchRig{js: js, stream: first.stream, rec: &recorder{}, dups: map[string]bool{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r.p = publish.New(js, publish.Options{MaxInflight: 256, Log: zerolog.Nop(),
		Batch: publish.BatchSubjects(first.stream.CachedInfo(), js.Conn().ConnectedServerVersion()),
		Acked: func(m *publish.Message, ack *jetstream.PubAck) {
			r.rec.Acked(m, ack)
			if ack.Duplicate {
				r.mu.Lock()
				r.dups[m.MsgID] = true
				r.mu.Unlock()
			}
		}})
	go func() { r.done <- r.p.Run(ctx) }()
	ids := seqIDs(0, 3000)
	r.publishAll(t, ids, len(ids), nil)
	r.waitAcked(t, len(ids))
	checkOrder(t, "acks", r.rec.acked, ids)
	checkOrder(t, "stream", r.streamIDs(t), ids)
	if len(r.dups) != 1000 {
		t.Fatalf("%d duplicates reported, want the 1000 re-sent messages", len(r.dups))
	}
	if r.p.Batched() < 1000 {
		t.Fatalf("only %d messages batched after the re-sent ones", r.p.Batched())
	}
}
