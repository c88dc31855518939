package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

const fleetStream = "jetstream-bridge-stream"

// waitEffects waits until the handler has applied n distinct events, each once.
func (w *world) waitEffects(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() error {
		total, distinct := w.effects(t)
		if total != n || distinct != n {
			return fmt.Errorf("%d effects (%d distinct), want %d", total, distinct, n)
		}
		return nil
	})
}

// stop ends a sink with SIGTERM and waits for its exit.
func stop(t *testing.T, p *testutil.Process) {
	t.Helper()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(time.Minute); err != nil {
		t.Fatalf("sink exit: %v\n%s", err, p.Output())
	}
}

// The Ruby gem of billing provisioned first: a work-queue stream with its
// subjects and its pull durable billing-workers. The sink of orders
// provisions on it (adding only its missing subjects, keeping the
// retention) and applies what the gem publishes; `sink dlq list` reads the
// dead letters without a consumer (a second durable on a work queue is
// refused), and `sink dlq replay` replays one and deletes it from the work
// queue, where nothing else would.
func TestBinary_GemFirstWorkQueueStreamSinkAppliesAndReadsDLQ(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := testutil.GemEnsureStream(ctx, w.js, fleetStream, "billing", "orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.GemCreateConsumer(ctx, w.js, fleetStream, testutil.GemPull, "billing", "orders"); err != nil {
		t.Fatal(err)
	}
	p := w.start(t)
	w.waitConsumer(t)
	const events = 10
	for i := range events {
		id := fmt.Sprintf("gem-%d", i)
		if _, err := w.js.Publish(ctx, "billing.sync.orders", testutil.GemEnvelope(id, "billing", "user", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.js.Publish(ctx, "billing.sync.orders", []byte(`{not json`)); err != nil {
		t.Fatal(err)
	}
	w.waitEffects(t, events)
	st, err := w.js.Stream(ctx, fleetStream)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Minute, func() error {
		_, err := st.GetLastMsgForSubject(ctx, "orders.sync.dlq")
		return err
	})
	stop(t, p)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Retention != jetstream.WorkQueuePolicy {
		t.Fatalf("retention is %v, want the gem's workqueue kept", info.Config.Retention)
	}
	// The gem's own dead letter beside the sink's.
	gm := testutil.GemDeadLetter("orders.sync.dlq", "billing.sync.orders", "gem-late", testutil.GemEnvelope("gem-late", "billing", "user", "99"),
		"unrecoverable", "ArgumentError", "bad input", 1, 3)
	if _, err := w.js.PublishMsg(ctx, gm); err != nil {
		t.Fatal(err)
	}

	out, err := w.runCmd(t, []string{"dlq", "list"})
	if err != nil || !strings.Contains(out, "2 dead letters on orders.sync.dlq") || !strings.Contains(out, "class poison") ||
		!strings.Contains(out, "event gem-late") {
		t.Fatalf("sink dlq list on a work queue: %v\n%s", err, out)
	}
	out, err = w.runCmd(t, []string{"dlq", "replay", "--event-id", "gem-late"})
	if err != nil || !strings.Contains(out, "removed dead letter seq") {
		t.Fatalf("sink dlq replay on a work queue: %v\n%s", err, out)
	}
	out, err = w.runCmd(t, []string{"dlq", "list"})
	if err != nil || !strings.Contains(out, "1 dead letters on orders.sync.dlq") || strings.Contains(out, "gem-late") {
		t.Fatalf("after the replay the work queue still lists it: %v\n%s", err, out)
	}
	p = w.start(t)
	w.waitEffects(t, events+1)
	stop(t, p)
	if _, err := w.js.Consumer(ctx, fleetStream, "billing-workers"); err != nil {
		t.Fatalf("the gem's durable: %v", err)
	}
}

// The orders app ran on the gem in push mode: its durable orders-workers
// delivers to billing.sync.orders.worker in queue group orders-workers,
// where gem workers listen. A push-mode sink joins them on that subject
// and group instead of moving the durable: events are shared between the
// sink and the gem workers, every one handled once, and the durable is as
// the gem made it. A DELIVER_SUBJECT set to another subject is refused.
func TestBinary_PushSinkSharesGemDeliverSubject(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := testutil.GemEnsureStream(ctx, w.js, fleetStream, "orders", "billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := testutil.GemCreateConsumer(ctx, w.js, fleetStream, testutil.GemPush, "orders", "billing"); err != nil {
		t.Fatal(err)
	}
	deliver := testutil.GemDeliverSubject("orders", "billing")
	var gemHandled atomic.Int64
	sub, err := w.nc.QueueSubscribe(deliver, "orders-workers", func(m *nats.Msg) {
		if m.Ack() == nil {
			gemHandled.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	out, err := w.runCmd(t, []string{"provision"}, "CONSUMER_MODE=push", "DELIVER_SUBJECT=elsewhere.orders")
	if err == nil || !strings.Contains(out, `delivers to "billing.sync.orders.worker"`) {
		t.Fatalf("provision with another DELIVER_SUBJECT: %v\n%s", err, out)
	}
	addr := testutil.FreeAddr(t)
	p := w.start(t, "CONSUMER_MODE=push", "HTTP_ADDR="+addr)
	testutil.Eventually(t, 30*time.Second, func() error {
		if r := scrape(addr, "/readyz"); !strings.Contains(r, `"status":"ready"`) {
			return fmt.Errorf("sink not subscribed yet: %s", r)
		}
		return nil
	})
	if !strings.Contains(p.Output(), "subscribing to its deliver subject and queue group as they are") {
		t.Fatalf("sink did not say it joins the existing durable:\n%s", p.Output())
	}
	const events = 40
	for i := range events {
		w.publish(t, ctx, fmt.Sprintf("e-%d", i), fmt.Sprint(i), fmt.Sprintf("0/%X", 100+i), 0)
	}
	testutil.Eventually(t, time.Minute, func() error {
		total, _ := w.effects(t)
		if got := total + int(gemHandled.Load()); got != events {
			return fmt.Errorf("sink applied %d, gem workers handled %d; want %d in all", total, gemHandled.Load(), events)
		}
		return nil
	})
	total, distinct := w.effects(t)
	t.Logf("sink applied %d, gem workers handled %d", total, gemHandled.Load())
	if total != distinct || total == 0 || gemHandled.Load() == 0 {
		t.Fatalf("sink applied %d effects for %d events, gem workers %d: want both sides to take part", total, distinct, gemHandled.Load())
	}
	stop(t, p)
	c, err := w.js.PushConsumer(ctx, fleetStream, "orders-workers")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := c.CachedInfo().Config; cfg.DeliverSubject != deliver || cfg.DeliverGroup != "orders-workers" {
		t.Fatalf("durable delivers to %q group %q, want the gem's %q group orders-workers", cfg.DeliverSubject, cfg.DeliverGroup, deliver)
	}
}

// INBOX_TABLE is the Ruby gem's inbox table, as its migration creates it.
// Before provisioning the sink refuses to start, naming the missing
// columns, the NOT NULL columns it would leave empty and the fix, instead
// of failing every event; `sink provision --print-sql` shows the
// statements and changes nothing; after `sink provision` events are
// applied end to end and recorded in the gem's table.
func TestBinary_GemInboxTableRefusedThenProvisionedAndApplied(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := w.conn.Exec(ctx, testutil.GemInboxDDL); err != nil {
		t.Fatal(err)
	}
	inbox := "INBOX_TABLE=public.jetstream_bridge_inbox_events"
	p := w.start(t, inbox, "AUTO_PROVISION=false")
	if err := p.Wait(time.Minute); err == nil || !strings.Contains(p.Output(), "lacks columns commit_lsn, tx_index") ||
		!strings.Contains(p.Output(), "created_at") || !strings.Contains(p.Output(), "sink provision --print-sql") {
		t.Fatalf("sink on the gem's inbox before provisioning: %v\n%s", err, p.Output())
	}
	out, err := w.runCmd(t, []string{"provision", "--print-sql"}, inbox)
	if err != nil || !strings.Contains(out, `ALTER TABLE "public"."jetstream_bridge_inbox_events" ADD COLUMN IF NOT EXISTS commit_lsn pg_lsn;`) ||
		!strings.Contains(out, `ALTER TABLE "public"."jetstream_bridge_inbox_events" ALTER COLUMN payload DROP NOT NULL;`) {
		t.Fatalf("provision --print-sql: %v\n%s", err, out)
	}
	if _, err := w.js.Stream(ctx, fleetStream); err == nil {
		t.Fatal("provision --print-sql created the stream")
	}
	if out, err := w.runCmd(t, []string{"provision"}, inbox); err != nil {
		t.Fatalf("sink provision: %v\n%s", err, out)
	}
	if out, err := w.runCmd(t, []string{"provision", "--print-sql"}, inbox); err != nil || strings.Contains(out, "ALTER TABLE \"public\".\"jetstream_bridge_inbox_events\" A") {
		t.Fatalf("provisioned table still needs changes: %v\n%s", err, out)
	}
	p = w.start(t, inbox, "AUTO_PROVISION=false")
	const events = 5
	for i := range events {
		w.publish(t, ctx, fmt.Sprintf("e-%d", i), fmt.Sprint(i), fmt.Sprintf("0/%X", 100+i), 0)
	}
	w.waitEffects(t, events)
	testutil.Eventually(t, time.Minute, func() error {
		var processed, lsns int
		if err := w.conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'processed' AND created_at IS NOT NULL),
			count(commit_lsn) FROM public.jetstream_bridge_inbox_events`).Scan(&processed, &lsns); err != nil {
			return err
		}
		if processed != events || lsns != events {
			return fmt.Errorf("gem inbox has %d processed rows, %d with their commit LSN; want %d", processed, lsns, events)
		}
		return nil
	})
	stop(t, p)
}
