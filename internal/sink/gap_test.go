package sink_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// gapCounter is a counter that also counts filled gaps.
type gapCounter struct {
	*counter
	lost, filled atomic.Int64
}

func (g *gapCounter) GapFilled(lost, filled int) {
	g.lost.Add(int64(lost))
	g.filled.Add(int64(filled))
}

// lossy is a sink test world whose NATS connection loses the first delivery
// of one event (first), as a cut connection or a server restart does.
type lossy struct {
	env     *env
	srv     *localenv.NATS
	proxy   *testutil.Proxy
	first   string
	dropped *atomic.Bool
}

// startLossy starts it with a consumer durable whose ack wait, without a
// backoff, is the time the lost delivery takes to come back.
func startLossy(t *testing.T, durable string, ackWait time.Duration, opts ...nats.Option) *lossy {
	t.Helper()
	l := &lossy{srv: testutil.StartNATS(t), first: testutil.NewUUID(), dropped: &atomic.Bool{}}
	l.proxy = testutil.StartFilterProxy(t, strings.TrimPrefix(l.srv.URL(), "nats://"), func(subject string, data []byte) bool {
		return bytes.Contains(data, []byte(l.first)) && l.dropped.CompareAndSwap(false, true)
	})
	l.env = newEnvOn(t, "nats://"+l.proxy.Addr, opts...)
	spec := consumerSpec()
	spec.Durable, spec.AckWait, spec.Backoff = durable, ackWait, nil
	l.env.ensureConsumer(t, spec)
	return l
}

// TestSink_LostDeliveryGoesBeforeLaterEventsOfItsKey: the first delivery of
// a key's first event never reaches the sink (a filter proxy drops it, as a
// connection cut or a server restart does), and the server redelivers it
// only after the ack wait. The later events of the key must not be applied
// before it: the gap in the consumer's delivery sequence shows the loss, the
// missing message is read from the stream and applied first, and its
// redelivery, when it comes, is acked as a duplicate.
func TestSink_LostDeliveryGoesBeforeLaterEventsOfItsKey(t *testing.T) {
	t.Parallel()
	l := startLossy(t, "orders-gaps", 4*time.Second)
	e, first := l.env, l.first

	ids := []string{first, testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()}
	keys := []string{"k", "other", "k", "other", "k"}
	for i, id := range ids {
		e.publish(t, e.event(t, id, "order", keys[i], pos("0/1000", i)))
	}
	h := &effectHandler{}
	obs := &gapCounter{counter: &counter{m: map[sink.Result]int{}}}
	_, stop := e.run(t, h, func(o *sink.Options) {
		o.Source, o.FillGaps, o.Observer = sink.JetStreamPull(e.cons), true, obs
	})
	// Well within the ack wait: the dropped delivery is not back yet.
	testutil.Eventually(t, 3*time.Second, func() error {
		if n := len(e.effects(t)); n < len(ids) {
			return fmt.Errorf("%d of %d events applied", n, len(ids))
		}
		return nil
	})
	if n := l.proxy.Dropped(); n != 1 {
		t.Fatalf("the proxy dropped %d deliveries, want 1", n)
	}
	applied := e.effects(t)
	var order []string
	for _, id := range applied {
		for i, want := range ids {
			if id == want && keys[i] == "k" {
				order = append(order, id)
			}
		}
	}
	if want := []string{ids[0], ids[2], ids[4]}; fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("key k applied in the order %v, want %v (stream order)", order, want)
	}
	if obs.lost.Load() != 1 || obs.filled.Load() != 1 {
		t.Errorf("gaps: %d deliveries lost, %d read from the stream; want 1 and 1", obs.lost.Load(), obs.filled.Load())
	}
	// The redelivery after the ack wait finds the event applied.
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: len(ids), sink.ResultDuplicate: 1})
	e.waitSettled(t)
	if got := e.effects(t); len(got) != len(ids) || count(got, first) != 1 {
		t.Errorf("effects %v: want each of the %d events once", got, len(ids))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSink_DeliveryLostInANATSRestartGoesFirst: the delivery of a key's
// event is lost with the connection while the server shuts down; after
// the restart the next event of the key arrives. It must not be applied
// before the lost one, whatever sequence the restarted server gives its
// deliveries: a failed pull makes the sink check its next new message
// against the stream.
func TestSink_DeliveryLostInANATSRestartGoesFirst(t *testing.T) {
	t.Parallel()
	l := startLossy(t, "orders-restart", 8*time.Second, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	e, first, srv := l.env, l.first, l.srv

	h := &effectHandler{}
	obs := &gapCounter{counter: &counter{m: map[sink.Result]int{}}}
	_, stop := e.run(t, h, func(o *sink.Options) {
		o.Source, o.FillGaps, o.Observer = sink.JetStreamPull(e.cons), true, obs
	})
	e.publish(t, e.event(t, testutil.NewUUID(), "order", "warm", pos("0/1000", 0)))
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(e.effects(t)); n < 1 {
			return errors.New("the first event is not applied yet")
		}
		return nil
	})
	e.publish(t, e.event(t, first, "order", "k", pos("0/2000", 0)))
	testutil.Eventually(t, 10*time.Second, func() error {
		if !l.dropped.Load() {
			return errors.New("the delivery is not dropped yet")
		}
		return nil
	})
	srv.Shutdown()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	second := testutil.NewUUID()
	testutil.Eventually(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m := e.event(t, second, "order", "k", pos("0/3000", 0))
		_, err := e.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		return err
	})
	// Well within the ack wait: the dropped delivery is not back yet.
	testutil.Eventually(t, 6*time.Second, func() error {
		if n := len(e.effects(t)); n < 3 {
			return fmt.Errorf("%d of 3 events applied", n)
		}
		return nil
	})
	var order []string
	for _, id := range e.effects(t) {
		if id == first || id == second {
			order = append(order, id)
		}
	}
	if fmt.Sprint(order) != fmt.Sprint([]string{first, second}) {
		t.Fatalf("key k applied in the order %v, want %v", order, []string{first, second})
	}
	if obs.filled.Load() != 1 {
		t.Errorf("%d messages read from the stream, want 1", obs.filled.Load())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestSink_NextReaderAppliesAPendingDeliveryFirst: a reader of the consumer
// lost a delivery and stopped before anything showed the gap (a partition
// handed over, a sink restarted). The next reader starts from the ack
// floor: the pending message is read from the stream and applied before the
// later event of its key, not after its ack wait.
func TestSink_NextReaderAppliesAPendingDeliveryFirst(t *testing.T) {
	t.Parallel()
	l := startLossy(t, "orders-next", 10*time.Second)
	e, first := l.env, l.first
	h := &effectHandler{}
	_, stop := e.run(t, h, func(o *sink.Options) { o.Source, o.FillGaps = sink.JetStreamPull(e.cons), true })
	e.publish(t, e.event(t, first, "order", "k", pos("0/1000", 0)))
	testutil.Eventually(t, 10*time.Second, func() error {
		if !l.dropped.Load() {
			return errors.New("the delivery is not dropped yet")
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	obs := &gapCounter{counter: &counter{m: map[sink.Result]int{}}}
	e.run(t, h, func(o *sink.Options) { o.Source, o.FillGaps, o.Observer = sink.JetStreamPull(e.cons), true, obs })
	second := testutil.NewUUID()
	e.publish(t, e.event(t, second, "order", "k", pos("0/2000", 0)))
	// Well within the ack wait: the dropped delivery is not back yet.
	testutil.Eventually(t, 6*time.Second, func() error {
		if n := len(e.effects(t)); n < 2 {
			return fmt.Errorf("%d of 2 events applied", n)
		}
		return nil
	})
	if got, want := fmt.Sprint(e.effects(t)), fmt.Sprint([]string{first, second}); got != want {
		t.Fatalf("applied in the order %s, want %s", got, want)
	}
	if obs.filled.Load() != 1 {
		t.Errorf("%d messages read from the stream, want 1", obs.filled.Load())
	}
}
