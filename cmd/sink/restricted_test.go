package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/jackc/pglogrepl"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// restrictedWorld is a world whose NATS server has the users above and
// whose log is watched for permission violations.
type restrictedWorld struct {
	*world
	srvLog *testutil.ViolationLog
}

func newRestrictedWorld(t *testing.T) *restrictedWorld {
	t.Helper()
	n, srvLog := testutil.StartNATSWithConfig(t, testutil.SinkUsersConf) // the README's least-privilege users
	w := &restrictedWorld{srvLog: srvLog}
	w.world = newWorldOn(t, n.URL(), nats.UserInfo("admin", "admin"))
	return w
}

// as returns the variables that make a command run as user.
func as(user string) []string { return []string{"NATS_USER=" + user, "NATS_PASSWORD=" + user} }

// operator are the variables of a command that only reads: the common ones,
// no handler.
func operator() []string { return append(as("admin"), "HANDLER=", "ROUTES_FILE=") }

// provision runs `sink provision` as admin without a handler.
func (w *restrictedWorld) provision(t *testing.T, extra ...string) {
	t.Helper()
	out, err := w.runCmd(t, []string{"provision"}, append(operator(), extra...)...)
	if err != nil || !strings.Contains(out, "provisioned") {
		t.Fatalf("sink provision as admin: %v\n%s", err, out)
	}
}

// publishEvents publishes events ev-from … ev-(to-1) over keys keys, and
// with poison one poison message.
func (w *restrictedWorld) publishEvents(t *testing.T, from, to, keys int, poison bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var futures []jetstream.PubAckFuture
	for i := from; i < to; i++ {
		m, err := w.builder.Build(&envelope.Row{EventID: "ev-" + strconv.Itoa(i), ResourceType: "user",
			ResourceID: strconv.Itoa(i % keys), EventType: "user.updated", Payload: []byte(`{}`),
			OccurredAt: "2026-01-02 03:04:05+00"}, envelope.Position{CommitLSN: pglogrepl.LSN(16 + i)})
		if err != nil {
			t.Fatal(err)
		}
		f, err := w.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("publish timed out")
		}
	}
	if !poison {
		return
	}
	if _, err := w.js.Publish(ctx, "billing.sync.orders", []byte("{not json"), jetstream.WithMsgID("poison-1")); err != nil {
		t.Fatal(err)
	}
}

// waitApplied waits until n distinct events have an effect.
func (w *restrictedWorld) waitApplied(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, 90*time.Second, func() error {
		if _, distinct := w.effects(t); distinct < n {
			return fmt.Errorf("%d of %d applied", distinct, n)
		}
		return nil
	})
}

// checkDone checks every event has exactly one effect, the poison message
// is the one dead letter, and `sink status` and `sink dlq list`, run with
// only the common variables, see a settled consumer of the given mode.
func (w *restrictedWorld) checkDone(t *testing.T, events int, mode string, extra ...string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		info, err := provision.ConsumerInfo(context.Background(), w.js, "jetstream-bridge-stream", "orders-workers", mode == "push")
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("%d pending, %d awaiting ack", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	if total, distinct := w.effects(t); total != events || distinct != events {
		t.Fatalf("%d effects for %d distinct events, want exactly %d", total, distinct, events)
	}
	out, err := w.runCmd(t, []string{"status", "--json"}, append(operator(), extra...)...)
	if err != nil {
		t.Fatalf("sink status without HANDLER: %v\n%s", err, out)
	}
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status output: %v\n%s", err, out)
	}
	if cs := st.Consumer; cs == nil || cs.Mode != mode || len(cs.Warnings) != 0 || cs.NumPending != 0 || cs.NumAckPending != 0 ||
		st.Inbox["processed"] != int64(events) || st.Inbox["dead"] != 1 {
		t.Fatalf("status: %s", out)
	}
	out, err = w.runCmd(t, []string{"dlq", "list", "--json"}, append(operator(), extra...)...)
	if err != nil || strings.Count(out, `"event_id"`) != 1 || !strings.Contains(out, `"event_id":"poison-1"`) ||
		!strings.Contains(out, `"class":"poison"`) {
		t.Fatalf("sink dlq list without HANDLER: %v\n%s", err, out)
	}
}

// checkNoViolations fails the test if the server logged a permission
// violation, or a sink reported one (nats.go passes them to the async error
// handler, which the sink logs).
func (w *restrictedWorld) checkNoViolations(t *testing.T, procs ...*testutil.Process) {
	t.Helper()
	v := w.srvLog.Lines()
	for _, p := range procs {
		for _, line := range strings.Split(p.Output(), "\n") {
			if strings.Contains(strings.ToLower(line), "permissions violation") {
				v = append(v, line)
			}
		}
	}
	if len(v) > 0 {
		t.Fatalf("permission violations:\n%s", strings.Join(v, "\n"))
	}
}

func stopAll(t *testing.T, procs ...*testutil.Process) {
	t.Helper()
	for _, p := range procs {
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if err := p.Wait(30 * time.Second); err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", err, p.Output())
		}
	}
}

var appliedRe = regexp.MustCompile(`jetstream_bridge_sink_events_total\{result="applied"\} (\d+)`)

func appliedMetric(addr string) int {
	m := appliedRe.FindStringSubmatch(scrape(addr, "/metrics"))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestBinary_RestrictedPull: AUTO_PROVISION=false in pull mode with a user
// that may only pull, ack and dead-letter (no $JS.API call but
// CONSUMER.MSG.NEXT): events are applied exactly once, poison is
// dead-lettered, nothing is refused.
func TestBinary_RestrictedPull(t *testing.T) {
	w := newRestrictedWorld(t)
	w.provision(t)
	const events, keys = 300, 30
	addr := testutil.FreeAddr(t)
	p := w.start(t, append(as("pull"), "AUTO_PROVISION=false", "HTTP_ADDR="+addr, "ACK_WAIT=2s", "BACKOFF=2s")...)
	w.publishEvents(t, 0, events, keys, true)
	w.waitApplied(t, events)
	if r := scrape(addr, "/readyz"); !strings.Contains(r, `"status":"ready"`) {
		t.Fatalf("readyz: %s", r)
	}
	w.checkDone(t, events, "pull")
	stopAll(t, p)
	w.checkNoViolations(t, p)
	if out := p.Output(); !strings.Contains(out, "consuming without JetStream API calls") {
		t.Fatalf("sink output lacks the restricted start:\n%s", out)
	}
}

// TestBinary_RestrictedPushScaleOut: CONSUMER_MODE=push, provisioned by an
// admin; two sinks run as a user that may only subscribe to the deliver
// subject (in the queue group), ack and dead-letter. They share the events;
// one is killed while both hold events, and what it held is redelivered to
// the other: every event is applied exactly once, poison is dead-lettered,
// nothing is refused.
func TestBinary_RestrictedPushScaleOut(t *testing.T) {
	w := newRestrictedWorld(t)
	push := []string{"CONSUMER_MODE=push", "AUTO_PROVISION=false", "CONCURRENCY=4", "ACK_WAIT=2s", "BACKOFF=2s"}
	w.provision(t, "CONSUMER_MODE=push")
	const events, keys = 2000, 200
	addrA, addrB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	a := w.start(t, append(append(as("push"), push...), "HTTP_ADDR="+addrA)...)
	b := w.start(t, append(append(as("push"), push...), "HTTP_ADDR="+addrB)...)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, addr := range []string{addrA, addrB} {
			if r := scrape(addr, "/readyz"); !strings.Contains(r, `"status":"ready"`) {
				return fmt.Errorf("readyz %s: %s", addr, r)
			}
		}
		return nil
	})
	w.publishEvents(t, 0, events/2, keys, true)
	w.waitApplied(t, events/2)
	if na, nb := appliedMetric(addrA), appliedMetric(addrB); na == 0 || nb == 0 || na+nb != events/2 {
		t.Fatalf("applied: %d by one sink, %d by the other; want both to take part, %d in all", na, nb, events/2)
	}

	// The second half arrives while handlers are blocked: both sinks hold
	// events (4 handlers each wait on the lock) when one is killed.
	unlock := w.lock(t)
	w.publishEvents(t, events/2, events, keys, false)
	w.waitHandlerBlocked(t, 8)
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	a.Wait(10 * time.Second)
	unlock()
	w.waitApplied(t, events)
	w.checkDone(t, events, "push", "CONSUMER_MODE=push")
	info, err := provision.ConsumerInfo(context.Background(), w.js, "jetstream-bridge-stream", "orders-workers", true)
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer <= events+1 {
		t.Fatalf("%d deliveries of %d messages: the killed sink held nothing, the test proves nothing", info.Delivered.Consumer, events+1)
	}
	stopAll(t, b)
	w.checkNoViolations(t, a, b)
}
