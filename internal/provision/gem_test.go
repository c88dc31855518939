package provision_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// In these tests the bridge runs system_b (relay and sink) and a Rails app
// on the Ruby gem runs system_a; they share one stream.
const (
	gemApp    = "system_a"
	bridgeApp = "system_b"
)

func relaySpec(retention jetstream.RetentionPolicy) provision.StreamSpec {
	subjects, fallback, wide := provision.RelaySubjects(envelope.Subjects{App: bridgeApp, Dest: gemApp})
	return provision.StreamSpec{Name: streamName, Subjects: subjects, Fallback: fallback, Wide: wide,
		Duplicates: 2 * time.Minute, Retention: retention}
}

func sinkStreamSpec(retention jetstream.RetentionPolicy) provision.StreamSpec {
	s := envelope.Subjects{App: bridgeApp, Dest: gemApp}
	return provision.StreamSpec{Name: streamName, Subjects: append([]string{s.Filter(), s.DLQ()}, provision.PeerSubjects(s)...),
		Retention: retention}
}

func bridgeConsumer() provision.ConsumerSpec {
	return provision.ConsumerSpec{Stream: streamName, Durable: bridgeApp + "-workers", Filter: gemApp + ".sync." + bridgeApp,
		AckWait: 30 * time.Second, MaxDeliver: 5, Backoff: sink.DefaultBackoff(), MaxAckPending: 1000}
}

// TestBridgeFirstStreamServesGemPeer: the relay and the sink of system_b
// create the stream (limits retention); the gem of system_a then provisions
// as it does: it refuses to touch a stream that is not a work queue, so the
// bridge must already cover its subjects. Its pull and push consumers are
// created (the push deliver subject system_b.sync.system_a.worker is not
// one the stream stores, so JetStream accepts it), its dead letters and its
// publishes back are stored.
func TestBridgeFirstStreamServesGemPeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	for _, spec := range []provision.StreamSpec{relaySpec(jetstream.LimitsPolicy), sinkStreamSpec(jetstream.LimitsPolicy)} {
		if _, err := provision.EnsureStream(ctx, js, spec, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
	if changed, err := testutil.GemEnsureStream(ctx, js, streamName, gemApp, bridgeApp); err != nil || changed {
		t.Fatalf("gem provisioning on a limits stream: changed=%v err=%v, want unchanged (it skips non-workqueue streams)", changed, err)
	}
	if _, err := testutil.GemCreateConsumer(ctx, js, streamName, testutil.GemPull, gemApp, bridgeApp); err != nil {
		t.Fatalf("gem pull consumer: %v", err)
	}
	st, _ := js.Stream(ctx, streamName)
	if err := st.DeleteConsumer(ctx, gemApp+"-workers"); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.GemCreateConsumer(ctx, js, streamName, testutil.GemPush, gemApp, bridgeApp); err != nil {
		t.Fatalf("gem push consumer with deliver subject %s: %v", testutil.GemDeliverSubject(gemApp, bridgeApp), err)
	}
	for _, subj := range []string{gemApp + ".sync.dlq", gemApp + ".sync." + bridgeApp, bridgeApp + ".sync." + gemApp} {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.Publish(pctx, subj, []byte(`{}`))
		pcancel()
		if err != nil {
			t.Fatalf("publish to %s (the gem's DLQ, its publish subject, the relay's): %v", subj, err)
		}
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Config.Subjects {
		if strings.HasSuffix(s, ">") {
			t.Fatalf("stream subjects %v: a '>' tail covers push deliver subjects", info.Config.Subjects)
		}
	}
	if info.State.Msgs != 3 || info.Config.Retention != jetstream.LimitsPolicy {
		t.Fatalf("stream holds %d messages with retention %v, want 3, limits", info.State.Msgs, info.Config.Retention)
	}
}

// TestBridgeFirstWorkQueueStreamExtendedByGem: with STREAM_RETENTION=workqueue
// the bridge creates the stream as the gem would, and the gem extends it
// with its subjects itself.
func TestBridgeFirstWorkQueueStreamExtendedByGem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	spec := provision.StreamSpec{Name: streamName, Subjects: []string{bridgeApp + ".sync.*"}, Retention: jetstream.WorkQueuePolicy}
	if _, err := provision.EnsureStream(ctx, js, spec, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if changed, err := testutil.GemEnsureStream(ctx, js, streamName, gemApp, bridgeApp); err != nil || !changed {
		t.Fatalf("gem provisioning on the bridge's workqueue stream: changed=%v err=%v, want its subjects added", changed, err)
	}
	if _, err := testutil.GemCreateConsumer(ctx, js, streamName, testutil.GemPull, gemApp, bridgeApp); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, gemApp+".sync.dlq", []byte(`{}`)); err != nil {
		t.Fatalf("gem dead letter: %v", err)
	}
}

// TestGemFirstWorkQueueStreamServesBridge: the gem of system_a created the
// stream (work queue) and its pull consumer. The relay's and the sink's
// provisioning add only their missing subjects and keep the retention; the
// relay's publishes reach the gem's consumer, the gem's publishes reach the
// sink's consumer, and both consumers live on the work queue side by side.
func TestGemFirstWorkQueueStreamServesBridge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	if _, err := testutil.GemEnsureStream(ctx, js, streamName, gemApp, bridgeApp); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.GemCreateConsumer(ctx, js, streamName, testutil.GemPull, gemApp, bridgeApp); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []provision.StreamSpec{relaySpec(jetstream.LimitsPolicy), sinkStreamSpec(jetstream.LimitsPolicy)} {
		if _, err := provision.EnsureStream(ctx, js, spec, zerolog.Nop()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := provision.EnsureConsumer(ctx, js, bridgeConsumer(), zerolog.Nop()); err != nil {
		t.Fatalf("sink consumer on the gem's work queue: %v", err)
	}
	st, _ := js.Stream(ctx, streamName)
	info, _ := st.Info(ctx)
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		t.Fatalf("retention changed to %v", info.Config.Retention)
	}
	got := slices.Sorted(slices.Values(info.Config.Subjects))
	if want := []string{"system_a.sync.dlq", "system_a.sync.system_b", "system_b.sync.*"}; !slices.Equal(got, want) {
		t.Fatalf("subjects %v, want %v", got, want)
	}
	// The relay publishes to the gem; the gem publishes to the sink.
	if _, err := js.Publish(ctx, bridgeApp+".sync."+gemApp, []byte(`relay`)); err != nil {
		t.Fatalf("relay publish: %v", err)
	}
	if _, err := js.Publish(ctx, gemApp+".sync."+bridgeApp, []byte(`gem`)); err != nil {
		t.Fatalf("gem publish: %v", err)
	}
	for durable, want := range map[string]string{gemApp + "-workers": "relay", bridgeApp + "-workers": "gem"} {
		c, err := js.Consumer(ctx, streamName, durable)
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil || string(m.Data()) != want {
			t.Fatalf("%s got %v (%v), want %q", durable, m, err, want)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		info, err := st.Info(ctx)
		if err == nil && info.State.Msgs != 0 {
			return fmt.Errorf("work queue still holds %d messages", info.State.Msgs)
		}
		return err
	})
}

// TestEnsureStreamReportsAndNarrowsWideSubject: a stream created by an
// earlier version holds system_b.sync.>, which covers the gem's push
// deliver subject. Provisioning keeps it (and warns) unless asked to
// narrow; narrowed, the gem's push consumer is accepted.
func TestEnsureStreamReportsAndNarrowsWideSubject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streamName,
		Subjects: []string{bridgeApp + ".sync.>", gemApp + ".sync." + bridgeApp}}); err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	spec := relaySpec(jetstream.LimitsPolicy)
	info, err := provision.EnsureStream(ctx, js, spec, zerolog.New(&logged))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(info.Config.Subjects, bridgeApp+".sync.>") || !strings.Contains(logged.String(), "--narrow-subjects") {
		t.Fatalf("subjects %v, log %s: want the wide subject kept and reported", info.Config.Subjects, logged.String())
	}
	spec.Narrow = true
	if info, err = provision.EnsureStream(ctx, js, spec, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(info.Config.Subjects, bridgeApp+".sync.>") || !slices.Contains(info.Config.Subjects, bridgeApp+".sync.*") {
		t.Fatalf("narrowed subjects %v", info.Config.Subjects)
	}
	if _, err := testutil.GemCreateConsumer(ctx, js, streamName, testutil.GemPush, gemApp, bridgeApp); err != nil {
		t.Fatalf("gem push consumer after narrowing: %v", err)
	}
}
