package main

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// memory is step 8: memory stays flat when the work is large.
//
//   - Relay: one transaction of --mem-rows outbox rows waits in the slot
//     before the relay starts; peak RSS (VmHWM) once the stream holds them
//     all. The relay streams a transaction in progress, so its memory is
//     bounded by the publish window, not by the transaction.
//   - Sink: --mem-events events of --mem-event-bytes each wait in the
//     stream; the sink applies them through the no-op SQL handler at
//     CONCURRENCY --mem-concurrency; its peak RSS at the end.
func (b *bench) memory(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 8: memory: relay drains one %s-row transaction; sink applies %d events of %s bytes at CONCURRENCY %d (%d repetition(s)) ...\n",
		thousands(int64(o.MemRows)), o.MemEvents, thousands(int64(o.MemEventBytes)), o.MemConc, o.Reps)
	for range o.Reps {
		if err := b.freshRelay(ctx); err != nil {
			return err
		}
		if _, err := b.src.Exec(ctx, `INSERT INTO `+outboxTable+` (resource_type, resource_id, event_type, payload)
			SELECT 'user', (g % 50000)::text, 'user.updated', $2::jsonb || jsonb_build_object('id', g)
			FROM generate_series(1, $1::int) g`, o.MemRows, payload(0)); err != nil {
			return fmt.Errorf("write the large transaction: %w", err)
		}
		relay, err := b.start(ctx, "relay", b.relayBin, b.relayEnv())
		if err != nil {
			return err
		}
		started := time.Now()
		target := uint64(o.MemRows)
		dw, err := b.waitDrain(ctx, target, max(2*time.Minute, time.Duration(o.MemRows/500)*time.Second), "relay drains the large transaction", relay)
		if err != nil {
			return err
		}
		rss := relay.peakRSS()
		if err := relay.stop(30 * time.Second); err != nil {
			return err
		}
		b.report.add(8, "mem_relay_rss", fmt.Sprintf("relay peak RSS (VmHWM) draining one %s-row transaction", thousands(int64(o.MemRows))), "MB", float64(rss)/(1<<20))
		b.report.add(8, "mem_relay_rate", "relay drain rate of that transaction", "ev/s", dw.rate(target, started), "js_publish_rate")
		if err := b.resetSource(ctx); err != nil {
			return err
		}

		// The sink: large events, many workers.
		if err := b.resetStream(ctx, true); err != nil {
			return err
		}
		blob := bytes.Repeat([]byte{'x'}, max(o.MemEventBytes-1024, 16))
		big := append(append([]byte(`{"blob": "`), blob...), `"}`...)
		msgs, err := b.buildKeyed(o.MemEvents, sinkKeys, big, 0)
		if err != nil {
			return fmt.Errorf("%w (--mem-event-bytes must fit the server's max_payload, %d bytes)", err, b.nc.MaxPayload())
		}
		size := len(msgs[0].Body)
		if _, err := b.publishAsync(ctx, msgs); err != nil {
			return err
		}
		msgs = nil
		r, err := b.sinkRun(ctx, "sql:bench.noop", o.MemConc, o.MemEvents, false, "mem")
		if err != nil {
			return err
		}
		b.report.add(8, "mem_sink_rss", fmt.Sprintf("sink peak RSS (VmHWM), %d events of %s B, CONCURRENCY %d", o.MemEvents, thousands(int64(size)), o.MemConc), "MB", float64(r.rss)/(1<<20))
		b.report.add(8, "mem_sink_rate", "sink rate with those events", "ev/s", r.rate)
		if err := b.resetSink(ctx); err != nil {
			return err
		}
	}
	return b.resetStream(ctx, false)
}
