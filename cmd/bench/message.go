package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// messageMode is step 7: jetstream_publish writing logical decoding messages
// (jetstream_bridge.outbox_mode = 'message') instead of outbox rows.
//
//   - Writers, as in production: --writers connections committing 1-row
//     transactions through jetstream_publish as fast as they can, for
//     --msg-duration in each mode, while the relay streams them (same
//     configuration in both modes) with OUTBOX_RETENTION=1s and
//     OUTBOX_PRUNE_INTERVAL=1s, and the outbox table is vacuumed every
//     msgVacuumEvery. So table mode pays in the measured window what its
//     rows cost over time: the insert, the relay's delete a few seconds
//     later and the vacuum of the dead rows; message mode pays for the
//     same relay, pruning and vacuum loops, which find nothing. Every
//     committed event must then reach the stream. The order of the modes
//     alternates between repetitions.
//   - Writers alone: the same for --limit-duration with no slot, no relay,
//     no pruning (the helper's cost and the commit, nothing else), as context.
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
		modes := []string{"table", "message"}
		if rep%2 == 1 {
			modes = []string{"message", "table"}
		}
		for _, mode := range modes {
			if err := b.msgWriters(ctx, pools[mode], mode); err != nil {
				return err
			}
		}
		if err := b.resetSource(ctx); err != nil {
			return err
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
			b.report.add(7, "msg_writer_bare_"+mode+"_rate", fmt.Sprintf("writers alone (no relay, no pruning), %s mode", mode), "ev/s", w.ratePerSec(), "pg_1row_rate")
		}
		// The floor of any message mode: the same writers committing a
		// transactional message that is only the payload, under a prefix
		// nobody reads, without the helper. No helper, however cheap, beats
		// it; its rate over table mode's is the most message mode can give
		// on this machine.
		w := b.newWriter(b.src, outboxTable, 1, 0)
		w.duration = o.LimitDuration
		w.stmt = `SELECT pg_logical_emit_message(true, 'jsb-bench-floor', $3::text) WHERE $1::uuid IS NOT NULL AND $2::text IS NOT NULL`
		if err := w.runFor(ctx); err != nil {
			return err
		}
		if err := b.checkRows(ctx, "message", w.committed.Load()); err != nil {
			return err
		}
		b.report.add(7, "msg_writer_bare_floor_rate", "writers alone, a bare transactional message (the payload, no helper)", "ev/s", w.ratePerSec(), "pg_1row_rate")

		for _, mode := range modes {
			if err := b.freshRelay(ctx); err != nil {
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

// msgVacuumEvery is how often step 7 vacuums the outbox table while the
// writers run: a stand-in for autovacuum set up for a busy outbox, whose
// default one-minute nap would fall outside a window of seconds.
const msgVacuumEvery = 5 * time.Second

// msgWriters measures the writers of one mode while the relay streams their
// events, prunes the rows it has confirmed and the table is vacuumed, then
// waits for every committed event to reach the stream.
func (b *bench) msgWriters(ctx context.Context, pool *pgxpool.Pool, mode string) error {
	o := b.opts
	if err := b.freshRelay(ctx); err != nil {
		return err
	}
	relay, err := b.start(ctx, "relay-writers-"+mode, b.relayBin, append(b.relayEnv(), "OUTBOX_RETENTION=1s", "OUTBOX_PRUNE_INTERVAL=1s"))
	if err != nil {
		return err
	}
	defer func() { _ = relay.stop(30 * time.Second) }()
	if err := relay.waitReady(ctx, time.Minute); err != nil {
		return err
	}
	st0, err := b.outboxStats(ctx)
	if err != nil {
		return err
	}
	load0 := loadAvg()
	vacCtx, stopVac := context.WithCancel(ctx)
	var (
		vacWG   sync.WaitGroup
		vacErr  error
		vacuums int
	)
	vacWG.Go(func() {
		t := time.NewTicker(msgVacuumEvery)
		defer t.Stop()
		for {
			select {
			case <-vacCtx.Done():
				return
			case <-t.C:
			}
			if _, err := b.src.Exec(vacCtx, "VACUUM "+outboxTable); err != nil && vacCtx.Err() == nil {
				vacErr = fmt.Errorf("vacuum outbox: %w", err)
				return
			}
			vacuums++
		}
	})
	w := b.newWriter(pool, outboxTable, 1, 0)
	w.viaHelper, w.duration = true, o.MsgDuration
	snap0 := b.cpuSnapshot(relay, nil)
	err = w.runFor(ctx)
	use := snap0.use(b.cpuSnapshot(relay, nil))
	stopVac()
	vacWG.Wait()
	if err != nil {
		return err
	}
	if vacErr != nil {
		return vacErr
	}
	st1, err := b.outboxStats(ctx)
	if err != nil {
		return err
	}
	n := w.committed.Load()
	if _, err := b.waitDrain(ctx, uint64(n), 2*time.Minute, "stream holds the writers' events ("+mode+" mode)", relay); err != nil {
		return err
	}
	b.report.add(7, "msg_writer_"+mode+"_rate",
		fmt.Sprintf("writers, %s mode, relay streaming, rows pruned and vacuumed", mode), "ev/s", w.ratePerSec(), "pg_1row_rate")
	inserted := st1.seq - st0.seq
	if mode == "message" && inserted != 0 {
		return fmt.Errorf("message mode: %d rows were inserted into the outbox table", inserted)
	}
	pruned := st0.rows + inserted - st1.rows
	b.report.note("msg_writer_"+mode+"_rate", "%s mode, %s: %d events; the relay deleted %d rows (%.0f%%) in the window, %d vacuums; "+
		"%.0f WAL bytes per event; load average %s → %s",
		mode, w.elapsed.Round(time.Millisecond), n, pruned, 100*float64(pruned)/float64(max(n, 1)),
		vacuums, float64(st1.walBytes-st0.walBytes)/float64(max(n, 1)), load0, loadAvg())
	b.report.note("msg_writer_"+mode+"_rate", "%s mode: %s; per event %s", mode, use, use.perEvent(w.ratePerSec()))
	return relay.stop(30 * time.Second)
}

// outboxStats are what a window of writers left behind: the outbox's rows
// and its id sequence (rows ever inserted, pruned or not) and the WAL
// position. Exact, unlike the statistics views, which lag by seconds.
type outboxStats struct {
	rows, seq, walBytes int64
}

func (b *bench) outboxStats(ctx context.Context) (outboxStats, error) {
	var s outboxStats
	err := b.src.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+outboxTable+`),
		(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM `+outboxTable+`_id_seq), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint`).
		Scan(&s.rows, &s.seq, &s.walBytes)
	if err != nil {
		return s, fmt.Errorf("read outbox statistics: %w", err)
	}
	return s, nil
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
