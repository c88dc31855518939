package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// messageMode is step 7: jetstream_publish writing logical decoding messages
// (jetstream_bridge.outbox_mode = 'message') instead of outbox rows.
//
//   - Writers: --writers connections committing 1-row transactions through
//     jetstream_publish as fast as they can, for --limit-duration in each
//     mode, with no slot (as step 1). The order of the modes alternates
//     between repetitions.
//   - Drain: --events events in 10-row transactions wait in the slot before
//     the relay starts (as step 2), once as rows and once as messages; the
//     rate counts from the first message in the stream to the last.
func (b *bench) messageMode(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 7: outbox as WAL messages vs table rows (%d repetition(s)) ...\n", o.Reps)
	msgPool, err := localenv.OpenPool(ctx, b.srcURL, int32(max(o.Writers, 4)+4), map[string]string{
		"application_name":             "jetstream-bridge-bench",
		"jetstream_bridge.outbox_mode": "message",
	})
	if err != nil {
		return err
	}
	defer msgPool.Close()
	pools := map[string]*pgxpool.Pool{"table": b.src, "message": msgPool}

	for rep := range o.Reps {
		if err := b.resetSource(ctx); err != nil {
			return err
		}
		modes := []string{"table", "message"}
		if rep%2 == 1 {
			modes = []string{"message", "table"}
		}
		for _, mode := range modes {
			w := b.newWriter(pools[mode], outboxTable, 1, 0)
			w.viaHelper, w.duration = true, o.LimitDuration
			if err := w.runFor(ctx); err != nil {
				return err
			}
			if err := b.checkRows(ctx, mode, w.committed.Load()); err != nil {
				return err
			}
			b.report.add(7, "msg_writer_"+mode+"_rate", fmt.Sprintf("jetstream_publish, %s mode, 1-row tx, %d conns", mode, o.Writers), "ev/s", w.ratePerSec(), "pg_1row_rate")
		}

		for _, mode := range modes {
			if err := b.resetSource(ctx); err != nil {
				return err
			}
			if err := b.resetStream(ctx, false); err != nil {
				return err
			}
			if err := b.provisionRelay(ctx); err != nil {
				return err
			}
			w := b.newWriter(pools[mode], outboxTable, 10, 0)
			w.viaHelper, w.total = true, o.Events
			if err := w.runFor(ctx); err != nil {
				return err
			}
			relay, err := b.start(ctx, "relay-"+mode, b.relayBin, b.relayEnv())
			if err != nil {
				return err
			}
			started := time.Now()
			target := uint64(o.Events)
			dw, err := b.waitDrain(ctx, target, max(2*time.Minute, time.Duration(o.Events/500)*time.Second), "relay drain ("+mode+" mode)", relay)
			if err != nil {
				return err
			}
			if err := relay.stop(30 * time.Second); err != nil {
				return err
			}
			b.report.add(7, "msg_drain_"+mode+"_rate", fmt.Sprintf("relay drain, %s mode (first to last message in stream)", mode), "ev/s", dw.rate(target, started), "js_publish_rate")
		}
	}
	return b.resetSource(ctx)
}

// checkRows makes sure the mode took effect: n rows in table mode, none in
// message mode.
func (b *bench) checkRows(ctx context.Context, mode string, n int64) error {
	var rows int64
	if err := b.src.QueryRow(ctx, "SELECT count(*) FROM "+outboxTable).Scan(&rows); err != nil {
		return err
	}
	want := n
	if mode == "message" {
		want = 0
	}
	if rows != want {
		return fmt.Errorf("%s mode: the outbox table holds %d rows, want %d", mode, rows, want)
	}
	_, err := b.src.Exec(ctx, "TRUNCATE "+outboxTable)
	return err
}
