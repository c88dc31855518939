package main

import (
	"context"
	"fmt"
	"time"
)

// endToEnd is step 5: writers commit outbox rows at each of --e2e-rates; the
// relay publishes them; the sink (CONCURRENCY --e2e-concurrency) applies
// them in the destination database through bench.record, which stores
// clock_timestamp() — inside the sink's transaction, just before its commit.
// Latency is that timestamp minus the writer's clock after its commit (one
// machine, one clock).
func (b *bench) endToEnd(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 5: end to end at %v ev/s for %s each, sink CONCURRENCY %d (%d repetition(s)) ...\n",
		ratesText(o.E2ERates), o.Duration, o.E2EConc, o.Reps)
	for range o.Reps {
		if err := b.resetSource(ctx); err != nil {
			return err
		}
		if err := b.resetStream(ctx, false); err != nil {
			return err
		}
		if err := b.resetSink(ctx); err != nil {
			return err
		}
		relay, err := b.start(ctx, "relay", b.relayBin, b.relayEnv())
		if err != nil {
			return err
		}
		if err := relay.waitReady(ctx, time.Minute); err != nil {
			return err
		}
		sink, err := b.start(ctx, "sink", b.sinkBin, b.sinkEnv("sql:bench.record", o.E2EConc))
		if err != nil {
			return err
		}
		if err := sink.waitReady(ctx, time.Minute); err != nil {
			return err
		}
		for _, rate := range o.E2ERates {
			id := "e2e_" + rateLabel(rate)
			label := fmt.Sprintf("%s/s: commit→applied", rateLabel(rate))
			commits := &clocks{}
			w := b.newWriter(b.src, outboxTable, 1, float64(rate))
			w.duration, w.commits = o.Duration, commits
			if err := w.runFor(ctx); err != nil {
				return err
			}
			stopped := time.Now()
			committed := w.committed.Load()
			if err := waitFor(ctx, 3*time.Minute, 20*time.Millisecond, "sink applies every event", func() (bool, error) {
				for _, p := range []*proc{relay, sink} {
					if p.exited() {
						return false, fmt.Errorf("%s exited: %v\n%s", p.name, p.Err(), p.tail(20))
					}
				}
				var n int64
				err := b.dst.QueryRow(ctx, "SELECT count(*) FROM bench.applied").Scan(&n)
				return n >= committed, err
			}); err != nil {
				return err
			}
			catchup := time.Since(stopped)
			lat, err := b.appliedLatencies(ctx, commits)
			if err != nil {
				return err
			}
			if len(lat) != int(committed) {
				return fmt.Errorf("%d events applied, %d committed", len(lat), committed)
			}
			p50, p99, p999 := lat.percentiles()
			b.report.add(5, id+"_p50", label+" p50", "ms", p50*1e3, "js_ack_p50", "pg_commit_p50")
			b.report.add(5, id+"_p99", label+" p99", "ms", p99*1e3, "js_ack_p99", "pg_commit_p99")
			b.report.add(5, id+"_p999", label+" p99.9", "ms", p999*1e3, "js_ack_p999", "pg_commit_p999")
			b.report.add(5, id+"_catchup", fmt.Sprintf("%s/s: writers stop → all applied", rateLabel(rate)), "ms", catchup.Seconds()*1e3)
			if _, err := b.dst.Exec(ctx, "TRUNCATE bench.applied"); err != nil {
				return err
			}
		}
		if err := sink.stop(30 * time.Second); err != nil {
			return err
		}
		if err := relay.stop(30 * time.Second); err != nil {
			return err
		}
	}
	return nil
}

// appliedLatencies reads bench.applied and returns applied minus commit time
// per event.
func (b *bench) appliedLatencies(ctx context.Context, commits *clocks) (latencies, error) {
	rows, err := b.dst.Query(ctx, "SELECT event_id, (extract(epoch FROM applied_at) * 1000000)::bigint FROM bench.applied")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out latencies
	for rows.Next() {
		var id string
		var us int64
		if err := rows.Scan(&id, &us); err != nil {
			return nil, err
		}
		seq, ok := seqOf(b.runID, id)
		if !ok {
			return nil, fmt.Errorf("applied event %q is not one of this run's", id)
		}
		c := commits.get(seq)
		if c == 0 {
			return nil, fmt.Errorf("applied event %s has no commit time", id)
		}
		out = append(out, max(float64(us*1000-c), 0)/1e9)
	}
	return out, rows.Err()
}
