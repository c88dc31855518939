package main_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// The Ruby gem of app_b provisioned first: a work-queue stream with its
// subjects and its pull durable app_b-workers on app_a.sync.app_b. `relay
// provision` adds only the relay's missing subjects and keeps the
// retention; committed rows reach the gem's consumer, each once.
func TestGemFirstWorkQueueStreamRelayPublishesToGemConsumer(t *testing.T) {
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := testutil.GemEnsureStream(ctx, h.js, stream, appB, appA); err != nil {
		t.Fatal(err)
	}
	gem, err := testutil.GemCreateConsumer(ctx, h.js, stream, testutil.GemPull, appB, appA)
	if err != nil {
		t.Fatal(err)
	}
	h.provision()
	p := h.start()
	waitReplicating(t, p)
	ids, err := h.insertTx(ctx, 5, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.js.Consumer(ctx, stream, gem.Name)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < len(ids) {
		batch, err := c.Fetch(len(ids)-len(got), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := len(got)
		for m := range batch.Messages() {
			got = append(got, m.Headers().Get("Nats-Msg-Id"))
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) == n {
			t.Fatalf("gem consumer got %v, want %v", got, ids)
		}
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("gem consumer got %v, want %v in commit order", got, ids)
		}
	}
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		t.Fatalf("retention %v, want the gem's workqueue kept", info.Config.Retention)
	}
}
