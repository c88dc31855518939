package sink_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

const deliverSubject = "_bridge.orders-workers"

// restricted is an env on a server with users (testutil.SinkUsersConf), whose log is
// watched for permission violations.
type restricted struct {
	*env
	srvLog *testutil.ViolationLog // the server's
	mu     sync.Mutex
	errs   []string // async errors of restricted connections
}

func newRestrictedEnv(t *testing.T) *restricted {
	t.Helper()
	n, srvLog := testutil.StartNATSWithConfig(t, testutil.SinkUsersConf)
	r := &restricted{srvLog: srvLog}
	r.env = newEnvOn(t, n.URL(), nats.UserInfo("admin", "admin"))
	return r
}

// connectAs connects as a restricted user, recording its async errors
// (nats.go reports a permission violation there).
func (r *restricted) connectAs(t *testing.T, user string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(r.nc.ConnectedUrl(), nats.UserInfo(user, user),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			r.mu.Lock()
			r.errs = append(r.errs, err.Error())
			r.mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// violations returns what the server logged about permissions and the
// restricted connections' async errors.
func (r *restricted) violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(r.srvLog.Lines(), r.errs...)
}

// TestSink_RestrictedSources runs the sink on RestrictedPull and on Push,
// connected as a user with only the documented minimum permissions: every
// reply the sink can send is exercised (ack, double ack, in-progress
// heartbeats, nak with delay on shutdown, term, dead-letter publish), and
// neither the server nor the client reports a permission violation.
func TestSink_RestrictedSources(t *testing.T) {
	for _, mode := range []string{"pull", "push"} {
		t.Run(mode, func(t *testing.T) {
			r := newRestrictedEnv(t)
			spec := consumerSpec()
			spec.AckWait, spec.Backoff = time.Second, []time.Duration{time.Second}
			if mode == "push" {
				spec.DeliverSubject = deliverSubject
			}
			r.ensureConsumer(t, spec) // as admin; push replaces newEnv's pull consumer
			nc := r.connectAs(t, mode)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			source := func() sink.Source {
				if mode == "push" {
					return sink.Push(nc, deliverSubject, durable)
				}
				return sink.RestrictedPull(nc, streamName, durable, filter)
			}
			restrictedOpts := func(ackWait time.Duration) func(*sink.Options) {
				return func(o *sink.Options) { o.JS, o.Source, o.AckWait = js, source(), ackWait }
			}

			// Events of several keys in order, a slow one held past the ack
			// wait, a flaky one, an exhausted one and poison.
			h := &effectHandler{before: func(ev *sink.Event, call int) error {
				switch id := ev.Envelope.EventID; {
				case id == "slow" && call == 1:
					time.Sleep(2500 * time.Millisecond) // > ACK_WAIT: only heartbeats keep it
				case id == "flaky" && call < 3:
					return errors.New("not yet")
				case id == "doomed":
					return errors.New("never")
				}
				return nil
			}}
			obs, stop := r.run(t, h, restrictedOpts(time.Second))
			const keys, perKey = 4, 10
			r.publish(t, r.event(t, "slow", "user", "slow", pos("0/1", 0)))
			for i := range keys * perKey {
				r.publish(t, r.event(t, fmt.Sprintf("k%d-%d", i%keys, i/keys), "user", fmt.Sprintf("k%d", i%keys), pos("0/2", i)))
			}
			r.publish(t, r.event(t, "flaky", "user", "flaky", pos("0/3", 0)))
			r.publish(t, r.event(t, "doomed", "user", "doomed", pos("0/3", 1)))
			r.publishRaw(t, filter, []byte("{not json"), nats.Header{envelope.HeaderMsgID: []string{"bad-1"}})
			published := keys*perKey + 4

			obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: keys*perKey + 2, sink.ResultDead: 2})
			r.waitSettled(t)
			got := r.effects(t)
			if len(got) != keys*perKey+2 || count(got, "slow") != 1 || count(got, "flaky") != 1 || count(got, "doomed") != 0 {
				t.Fatalf("effects=%v, want every event but doomed once", got)
			}
			for k := range keys {
				var order []string
				for _, id := range got {
					if strings.HasPrefix(id, fmt.Sprintf("k%d-", k)) {
						order = append(order, id)
					}
				}
				for i, id := range order {
					if want := fmt.Sprintf("k%d-%d", k, i); id != want {
						t.Fatalf("key k%d applied as %v, want stream order", k, order)
					}
				}
			}
			info, err := r.info()
			if err != nil {
				t.Fatal(err)
			}
			if int(info.Delivered.Consumer) != published {
				t.Fatalf("delivered %d times for %d messages: heartbeats did not keep held messages", info.Delivered.Consumer, published)
			}
			var classes []string
			for _, dl := range r.deadLetters(t) {
				classes = append(classes, dl.Class)
			}
			slices.Sort(classes)
			if !slices.Equal(classes, []string{envelope.ClassExhausted, envelope.ClassPoison}) {
				t.Fatalf("dead letters %v, want one exhausted and one poison", classes)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}

			// Shutdown hands held messages back (NAK): with a 30s ack wait, a
			// new sink gets them at once.
			spec.AckWait, spec.Backoff = 30*time.Second, []time.Duration{30 * time.Second}
			r.ensureConsumer(t, spec)
			started, release := make(chan struct{}), make(chan struct{})
			h2 := &effectHandler{before: func(ev *sink.Event, _ int) error {
				if ev.Envelope.EventID == "blocker" {
					close(started)
					<-release
				}
				return nil
			}}
			stopping := make(chan struct{}) // closed when the sink takes no more messages
			var once sync.Once
			_, stop = r.run(t, h2, func(o *sink.Options) {
				restrictedOpts(30 * time.Second)(o)
				o.Log = o.Log.Level(zerolog.InfoLevel).Hook(zerolog.HookFunc(func(_ *zerolog.Event, _ zerolog.Level, msg string) {
					if strings.HasPrefix(msg, "stopping") {
						once.Do(func() { close(stopping) })
					}
				}))
			})
			r.publish(t, r.event(t, "blocker", "user", "b", pos("0/4", 0)))
			for i := range 5 {
				r.publish(t, r.event(t, fmt.Sprintf("behind-%d", i), "user", "b", pos("0/4", i+1)))
			}
			<-started
			testutil.Eventually(t, 10*time.Second, func() error {
				if info, err := r.info(); err != nil || info.NumAckPending != 6 {
					return fmt.Errorf("awaiting ack: %v %v, want all 6 delivered", info, err)
				}
				return nil
			})
			stopped := make(chan error, 1)
			go func() { stopped <- stop() }()
			<-stopping // the rest of the lane is handed back once the blocker is done
			close(release)
			if err := <-stopped; err != nil {
				t.Fatal(err)
			}
			obs, stop = r.run(t, &effectHandler{}, restrictedOpts(30*time.Second))
			obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 5})
			r.waitSettled(t)
			got = r.effects(t)
			if tail := got[len(got)-6:]; !slices.Equal(tail, []string{"blocker", "behind-0", "behind-1", "behind-2", "behind-3", "behind-4"}) {
				t.Fatalf("last effects %v, want blocker then behind-0..4 in order", tail)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if v := r.violations(); len(v) > 0 {
				t.Fatalf("permission violations:\n%s", strings.Join(v, "\n"))
			}
		})
	}
}

// TestSink_RestrictedPullReportsMissingConsumer: pull requests for a
// consumer that does not exist find no responder; Run ends with
// ErrConsumerMissing instead of waiting forever.
func TestSink_RestrictedPullReportsMissingConsumer(t *testing.T) {
	e := newEnv(t)
	s, err := sink.New(sink.Options{DB: e.pool, JS: e.js, Source: sink.RestrictedPull(e.nc, streamName, "nobody", filter),
		Handler: &effectHandler{}, DLQSubject: dlqSubject, UseDLQ: true, FetchWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, sink.ErrConsumerMissing) {
		t.Fatalf("Run: %v, want ErrConsumerMissing", err)
	}
	if err := s.Ready(); err == nil {
		t.Fatal("ready without a consumer")
	}
}

// TestSink_PushRefusedSubscription: a user who may not subscribe to the
// deliver subject gets an error from Run, not a sink that silently waits.
func TestSink_PushRefusedSubscription(t *testing.T) {
	r := newRestrictedEnv(t)
	nc := r.connectAs(t, "pull") // may not subscribe to the deliver subject
	s, err := sink.New(sink.Options{DB: r.pool, JS: r.js, Source: sink.Push(nc, deliverSubject, durable),
		Handler: &effectHandler{}, DLQSubject: dlqSubject, UseDLQ: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Run(ctx); err == nil || !strings.Contains(err.Error(), "Permissions Violation") {
		t.Fatalf("Run: %v, want the permissions violation", err)
	}
}
