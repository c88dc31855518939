package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// limits is step 1: what this machine does without the bridge, with the
// bridge's rows and messages. Every later result is a ratio to these.
//
//   - Postgres: --writers connections inserting outbox rows (the bridge's
//     table, indexes and publication; no replication slot), in 1-row and
//     10-row transactions, as fast as they can; and the commit round trip
//     of one connection alone.
//   - JetStream: the relay's messages (same envelope, headers, Nats-Msg-Id)
//     published asynchronously with the relay's window, acks checked in
//     order; and the publish→ack round trip of one synchronous publisher.
func (b *bench) limits(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 1: limits (%d repetition(s)) ...\n", o.Reps)
	for rep := range o.Reps {
		if err := b.dropSlot(ctx); err != nil {
			return err
		}
		for _, rows := range []int{1, 10} {
			if _, err := b.src.Exec(ctx, "TRUNCATE "+outboxTable); err != nil {
				return err
			}
			w := b.newWriter(b.src, outboxTable, rows, 0)
			w.duration = o.LimitDuration
			before := b.cpuSnapshot(nil, nil)
			if err := w.runFor(ctx); err != nil {
				return err
			}
			use := before.use(b.cpuSnapshot(nil, nil))
			id := fmt.Sprintf("pg_%drow_rate", rows)
			b.report.add(1, id, fmt.Sprintf("postgres outbox insert, %d-row tx, %d conns", rows, o.Writers), "ev/s", w.ratePerSec())
			if rep == 0 {
				b.report.note(id, "%s", use)
			}
		}

		// One connection alone: the commit round trip.
		if _, err := b.src.Exec(ctx, "TRUNCATE "+outboxTable); err != nil {
			return err
		}
		w := b.newWriter(b.src, outboxTable, 1, 0)
		w.conns, w.total, w.recordLat = 1, min(2000, o.Events), true
		if err := w.runFor(ctx); err != nil {
			return err
		}
		p50, p99, p999 := latencies(w.latencies).percentiles()
		b.report.add(1, "pg_commit_p50", "postgres 1-row insert commit p50, 1 conn", "ms", p50*1e3)
		b.report.add(1, "pg_commit_p99", "postgres 1-row insert commit p99, 1 conn", "ms", p99*1e3)
		b.report.add(1, "pg_commit_p999", "postgres 1-row insert commit p99.9, 1 conn", "ms", p999*1e3)
		if _, err := b.src.Exec(ctx, "TRUNCATE "+outboxTable); err != nil {
			return err
		}

		// JetStream, async: through the relay's own publish window (the
		// limit: the relay minus reading and decoding WAL), and through the
		// nats.go jetstream client's PublishMsgAsync for comparison.
		for _, raw := range []struct {
			id, label string
			publish   func(context.Context, []envelope.Message) (time.Duration, error)
		}{
			{"js_publish_rate", "jetstream async publish, relay's window", b.publishWindow},
			{"js_client_publish_rate", "jetstream async publish, nats.go PublishMsgAsync", b.publishAsync},
		} {
			if err := b.resetStream(ctx, true); err != nil {
				return err
			}
			msgs, err := b.buildMessages(o.Events, 0)
			if err != nil {
				return err
			}
			before := b.cpuSnapshot(nil, nil)
			took, err := raw.publish(ctx, msgs)
			if err != nil {
				return err
			}
			use := before.use(b.cpuSnapshot(nil, nil))
			if n, err := b.streamMsgs(ctx); err != nil || n != uint64(len(msgs)) {
				return fmt.Errorf("raw publish: stream holds %d messages, want %d (%v)", n, len(msgs), err)
			}
			b.report.add(1, raw.id, fmt.Sprintf("%s %d, %d B body", raw.label, o.MaxInflight, len(msgs[0].Body)),
				"msg/s", float64(len(msgs))/took.Seconds())
			if rep == 0 {
				b.report.note(raw.id, "%s", use)
			}
		}

		// JetStream, one synchronous publisher: the publish→ack round trip.
		one, err := b.buildMessages(min(2000, o.Events), 0)
		if err != nil {
			return err
		}
		var lat latencies
		for i := range one {
			m := &one[i]
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			t0 := time.Now()
			_, err := b.js.PublishMsg(pctx, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
			cancel()
			if err != nil {
				return fmt.Errorf("sync publish: %w", err)
			}
			lat = append(lat, time.Since(t0).Seconds())
		}
		p50, p99, p999 = lat.percentiles()
		b.report.add(1, "js_ack_p50", "jetstream publish→ack p50, 1 sync publisher", "ms", p50*1e3)
		b.report.add(1, "js_ack_p99", "jetstream publish→ack p99, 1 sync publisher", "ms", p99*1e3)
		b.report.add(1, "js_ack_p999", "jetstream publish→ack p99.9, 1 sync publisher", "ms", p999*1e3)
	}
	return b.resetStream(ctx, false)
}
