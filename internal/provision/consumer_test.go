package provision_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

const (
	streamName = "jetstream-bridge-stream"
	durable    = "orders-workers"
	filter     = "billing.sync.orders"
	dlqSubject = "orders.sync.dlq"

	deliverSubject = "_bridge.orders-workers"
)

func testSpec() provision.ConsumerSpec {
	return provision.ConsumerSpec{Stream: streamName, Durable: durable, Filter: filter, AckWait: 30 * time.Second,
		MaxDeliver: 5, Backoff: sink.DefaultBackoff(), MaxAckPending: 1000}
}

func TestConsumerSpec_Config(t *testing.T) {
	s := provision.ConsumerSpec{Durable: "d", Filter: "a.sync.b", AckWait: 10 * time.Second, MaxDeliver: 3,
		Backoff: []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}, MaxAckPending: 100}
	c := s.Config()
	if want := []time.Duration{10 * time.Second, 10 * time.Second, 15 * time.Second}; !slices.Equal(c.BackOff, want) {
		t.Fatalf("BackOff=%v, want %v (raised to ACK_WAIT, cut to MAX_DELIVER)", c.BackOff, want)
	}
	if c.AckWait != 10*time.Second || c.MaxDeliver != -1 || c.AckPolicy != jetstream.AckExplicitPolicy ||
		c.DeliverPolicy != jetstream.DeliverAllPolicy || c.MaxAckPending != 100 || c.FilterSubject != "a.sync.b" {
		t.Fatalf("config=%+v", c)
	}
}

func TestEnsureConsumer_CreatesUpdatesRecreates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := testutil.StartNATS(t)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := provision.EnsureStream(ctx, js, provision.StreamSpec{Name: streamName, Subjects: []string{"billing.sync.>", dlqSubject}}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	spec := testSpec()

	// Bind without provisioning: a missing consumer is a clear error.
	if _, err := sink.BindConsumer(ctx, js, streamName, durable); !errors.Is(err, sink.ErrConsumerMissing) {
		t.Fatalf("BindConsumer on nothing: %v, want ErrConsumerMissing", err)
	}

	info, err := provision.EnsureConsumer(ctx, js, spec, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxDeliver != -1 || info.Config.AckWait != 30*time.Second || len(info.Config.BackOff) != 5 ||
		info.Config.FilterSubject != filter || info.Config.AckPolicy != jetstream.AckExplicitPolicy {
		t.Fatalf("created config: %+v", info.Config)
	}
	// Again: nothing to change, same consumer.
	if i2, err := provision.EnsureConsumer(ctx, js, spec, zerolog.Nop()); err != nil || i2.Created != info.Created {
		t.Fatalf("second EnsureConsumer: %v (created %v, was %v)", err, i2.Created, info.Created)
	}
	// Settings the server can update are updated in place.
	spec.Filter = "billing.sync.other"
	spec.MaxAckPending = 50
	i3, err := provision.EnsureConsumer(ctx, js, spec, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if i := i3; i.Created != info.Created || i.Config.FilterSubject != "billing.sync.other" || i.Config.MaxAckPending != 50 {
		t.Fatalf("after update: created %v (was %v), filter %q, max ack pending %d", i.Created, info.Created, i.Config.FilterSubject, i.Config.MaxAckPending)
	}

	// A setting the server refuses to change (the ack policy): deleted and
	// recreated, starting after the old ack floor.
	st, _ := js.Stream(ctx, streamName)
	if err := st.DeleteConsumer(ctx, durable); err != nil {
		t.Fatal(err)
	}
	old, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: durable, FilterSubject: filter, AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish(ctx, filter, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := old.Fetch(3, jetstream.FetchMaxWait(5*time.Second)) // ack none: the floor moves at delivery
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	spec = testSpec()
	i, err := provision.EnsureConsumer(ctx, js, spec, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if i.Config.AckPolicy != jetstream.AckExplicitPolicy || i.Config.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || i.Config.OptStartSeq != 4 {
		t.Fatalf("recreated: ack %v, deliver %v from %d; want explicit, from seq 4", i.Config.AckPolicy, i.Config.DeliverPolicy, i.Config.OptStartSeq)
	}
	if i.NumPending != 0 {
		t.Fatalf("recreated consumer has %d pending, want 0 (already consumed messages are not delivered again)", i.NumPending)
	}
	// The recreated consumer is kept as it is on the next start.
	if i5, err := provision.EnsureConsumer(ctx, js, spec, zerolog.Nop()); err != nil || i5.Created != i.Created {
		t.Fatalf("EnsureConsumer after recreation: %v", err)
	}
	b, err := sink.BindConsumer(ctx, js, streamName, durable)
	if err != nil {
		t.Fatal(err)
	}
	if w := provision.CheckBound(b.CachedInfo(), spec); len(w) != 0 {
		t.Fatalf("CheckBound warnings on a provisioned consumer: %v", w)
	}
	other := spec
	other.Filter = "other.subject"
	if w := provision.CheckBound(old.CachedInfo(), other); len(w) != 2 {
		t.Fatalf("CheckBound on an ack-none consumer with another filter: %v, want 2 warnings", w)
	}
}

// TestEnsureConsumer_SwitchesPullAndPush: CONSUMER_MODE changes are a
// setting the server refuses to update; the consumer is recreated from the
// old ack floor, both ways.
func TestEnsureConsumer_SwitchesPullAndPush(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := testutil.StartNATS(t)
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := provision.EnsureStream(ctx, js, provision.StreamSpec{Name: streamName, Subjects: []string{filter, dlqSubject}}, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	pull := testSpec()
	if _, err := provision.EnsureConsumer(ctx, js, pull, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := js.Publish(ctx, filter, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	c, err := sink.BindConsumer(ctx, js, streamName, durable)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}

	push := pull
	push.DeliverSubject = deliverSubject
	if w := provision.CheckBound(c.CachedInfo(), push); len(w) != 1 || !strings.Contains(w[0], "pull consumer, CONSUMER_MODE is push") {
		t.Fatalf("CheckBound of a pull consumer for push mode: %v", w)
	}
	info, err := provision.EnsureConsumer(ctx, js, push, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if cfg := info.Config; cfg.DeliverSubject != deliverSubject || cfg.DeliverGroup != durable || cfg.FlowControl ||
		cfg.IdleHeartbeat != 0 || cfg.OptStartSeq != 3 || cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.MaxAckPending != 1000 {
		t.Fatalf("push consumer: %+v; want deliver subject %s, group %s, from seq 3", cfg, deliverSubject, durable)
	}
	if info.NumPending != 1 {
		t.Fatalf("push consumer has %d pending, want 1 (the two acknowledged are not delivered again)", info.NumPending)
	}
	if w := provision.CheckBound(info, push); len(w) != 0 {
		t.Fatalf("CheckBound of the provisioned push consumer: %v", w)
	}
	if w := provision.CheckBound(info, pull); len(w) != 1 || !strings.Contains(w[0], "push consumer") {
		t.Fatalf("CheckBound of a push consumer for pull mode: %v", w)
	}
	if again, err := provision.EnsureConsumer(ctx, js, push, zerolog.Nop()); err != nil || again.Created != info.Created {
		t.Fatalf("EnsureConsumer on the push consumer again: %v", err)
	}
	if got, err := provision.ConsumerInfo(ctx, js, streamName, durable, false); err != nil || got.Config.DeliverSubject != deliverSubject {
		t.Fatalf("ConsumerInfo of a push consumer looked up as pull: %v", err)
	}

	back, err := provision.EnsureConsumer(ctx, js, pull, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if back.Config.DeliverSubject != "" || back.Config.DeliverGroup != "" {
		t.Fatalf("back to pull: %+v", back.Config)
	}
	if _, err := provision.ConsumerInfo(ctx, js, streamName, "nobody", true); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("ConsumerInfo of nothing: %v, want ErrConsumerNotFound", err)
	}
}
