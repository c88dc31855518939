package publish_test

import (
	"context"
	"errors"
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

type recorder struct {
	mu    sync.Mutex
	acked []string
	dead  []string
}

func (r *recorder) Acked(m *publish.Message, _ *jetstream.PubAck) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Header.Get("Bridge-Error") != "" {
		r.dead = append(r.dead, string(m.Owner.(ref)))
	}
	r.acked = append(r.acked, string(m.Owner.(ref)))
}

// ref names the message a test published: the dead letter that replaced
// it carries it too.
type ref string

func (ref) Settled(*publish.Message, *jetstream.PubAck) {}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acked)
}

func msg(subject, id string) *publish.Message {
	return &publish.Message{Subject: subject, MsgID: id, Owner: ref(id), Body: []byte(`{"id":"` + id + `"}`),
		Header: nats.Header{"Nats-Msg-Id": []string{id}}}
}

// TestPublisherSurvivesServerRestartInOrder publishes through a server
// restart: every message is acked exactly once, in submission order, and the
// stream holds each id once.
func TestPublisherSurvivesServerRestartInOrder(t *testing.T) {
	srv := testutil.StartNATS(t)
	js := testutil.ConnectJS(t, srv.URL(), testutil.Reconnecting...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "s", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	var retried sync.Map
	p := publish.New(js, publish.Options{MaxInflight: 64, AckTimeout: 2 * time.Second, Acked: rec.Acked, Log: zerolog.Nop(),
		Retried: func(m *publish.Message, _ error) { retried.Store(m.MsgID, true) }})
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()

	const total = 3000
	var restarted time.Time
	for i := 0; i < total; i++ {
		if i == 1000 {
			restarted = time.Now()
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Publish(ctx, msg("s.x", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := rec.count(); n != total {
			return fmt.Errorf("%d of %d acked", n, total)
		}
		return nil
	})
	// Acks lost in the reconnect time out together, not one AckTimeout
	// after another.
	if took := time.Since(restarted); took > 10*time.Second {
		t.Fatalf("recovering from the restart took %s, want a few ack timeouts (2s) at most", took)
	}
	for i, id := range rec.acked {
		if id != fmt.Sprint(i) {
			t.Fatalf("ack %d is for %s: acks out of submission order", i, id)
		}
	}
	n := 0
	retried.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Fatal("no publish was retried: the restart did not hit the window")
	}
	t.Logf("%d messages re-published after the restart", n)
	s, _ := js.Stream(ctx, "s")
	info, _ := s.Info(ctx)
	if info.State.Msgs != total {
		t.Fatalf("stream holds %d messages, want %d (each once)", info.State.Msgs, total)
	}
	// The stream holds them in submission order too: no message was stored
	// before an earlier one that was being re-published.
	for seq := uint64(1); seq <= total; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if id := m.Header.Get("Nats-Msg-Id"); id != fmt.Sprint(seq-1) {
			t.Fatalf("stream sequence %d holds %s, want %d: stored out of submission order", seq, id, seq-1)
		}
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
}

// TestPublisherDeadLettersRefusedMessages: a message over the stream's max
// size is replaced by the dead letter the caller builds; the next ones flow.
func TestPublisherDeadLettersRefusedMessages(t *testing.T) {
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "s", Subjects: []string{"s.>"}, MaxMsgSize: 512}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	var reasons []error
	p := publish.New(js, publish.Options{Acked: rec.Acked, Log: zerolog.Nop(),
		Rejected: func(m *publish.Message, err error) (*publish.Message, error) {
			reasons = append(reasons, err)
			return &publish.Message{Subject: "s.dlq", Body: []byte(`{}`),
				Header: nats.Header{"Nats-Msg-Id": []string{"dlq-" + m.MsgID}, "Bridge-Error": []string{err.Error()}}}, nil
		}})
	go p.Run(ctx)
	big := msg("s.x", "big")
	big.Body = make([]byte, 2048)
	for _, m := range []*publish.Message{msg("s.x", "a"), big, msg("s.x", "b")} {
		if err := p.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := rec.count(); n != 3 {
			return fmt.Errorf("%d of 3 acked", n)
		}
		return nil
	})
	if fmt.Sprint(rec.acked) != "[a big b]" || fmt.Sprint(rec.dead) != "[big]" || len(reasons) != 1 {
		t.Fatalf("acked=%v dead=%v reasons=%v", rec.acked, rec.dead, reasons)
	}
}

// TestPublisherReportsAcksAndNoStream: acks carry the stream, its sequence
// and whether JetStream deduplicated the message; a subject no stream covers
// is rejected when NoStream says so, and the window goes on.
func TestPublisherReportsAcksAndNoStream(t *testing.T) {
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "acks", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		got  []string
		rejs []error
	)
	p := publish.New(js, publish.Options{Log: zerolog.Nop(),
		Acked: func(m *publish.Message, ack *jetstream.PubAck) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%s:%s/%d/%t", m.Owner, ack.Stream, ack.Sequence, ack.Duplicate))
		},
		NoStream: func(context.Context, string) bool { return true },
		Rejected: func(m *publish.Message, err error) (*publish.Message, error) {
			mu.Lock()
			defer mu.Unlock()
			rejs = append(rejs, err)
			return &publish.Message{Subject: "s.dlq", Body: []byte(`{}`),
				Header: nats.Header{"Nats-Msg-Id": []string{"dlq-" + m.MsgID}, "Bridge-Error": []string{err.Error()}}}, nil
		}})
	subs := js.Conn().NumSubscriptions()
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(ctx) }()
	for _, m := range []*publish.Message{msg("s.x", "a"), msg("s.x", "b"), msg("s.x", "a"), msg("nowhere.x", "c"), msg("s.x", "d")} {
		if err := p.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 5 {
			return fmt.Errorf("%d of 5 acked: %v", len(got), got)
		}
		return nil
	})
	// c's dead letter is published after d (the window does not wait for a
	// failure), but the callbacks come in submission order.
	want := "[a:acks/1/false b:acks/2/false a:acks/1/true c:acks/4/false d:acks/3/false]"
	if fmt.Sprint(got) != want {
		t.Fatalf("acks %v, want %v", got, want)
	}
	if len(rejs) != 1 || !errors.Is(rejs[0], nats.ErrNoResponders) {
		t.Fatalf("rejections %v, want one no-responders", rejs)
	}
	// Once Run returns, the publisher's ack subscription is gone.
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if n := js.Conn().NumSubscriptions(); n != subs {
		t.Fatalf("%d subscriptions after Run returned, want %d", n, subs)
	}
}
