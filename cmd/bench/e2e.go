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
	for rep := range o.Reps {
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
			perSec := rateLabel(rate) + "/s: "
			label := perSec + "commit→applied"
			commits := &clocks{}
			obs, err := b.observe(ctx)
			if err != nil {
				return err
			}
			w := b.newWriter(b.src, outboxTable, 1, float64(rate))
			w.duration, w.commits = o.Duration, commits
			before, err := sink.metrics(ctx)
			if err != nil {
				return err
			}
			snap0 := b.cpuSnapshot(relay, sink)
			if err := w.runFor(ctx); err != nil {
				return err
			}
			use := snap0.use(b.cpuSnapshot(relay, sink))
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
			lat, split, err := b.appliedLatencies(ctx, commits, obs)
			obs.stop()
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
			// Where the time goes: commit → the event is in the stream
			// (the relay, and the observer's receipt), and in the stream →
			// applied (the sink).
			for _, part := range []struct {
				key, what string
				l         latencies
			}{{"relay", "commit→in stream (relay)", split.relay}, {"sink", "in stream→applied (sink)", split.sink}} {
				p50, p99, _ := part.l.percentiles()
				b.report.add(5, id+"_"+part.key+"_p50", perSec+part.what+" p50", "ms", p50*1e3)
				b.report.add(5, id+"_"+part.key+"_p99", perSec+part.what+" p99", "ms", p99*1e3)
			}
			// The sink's own view of its part: from the store in the stream
			// to the ack, and from arrival in the sink to the ack (its
			// lag and held histograms, this rate's observations only).
			after, err := sink.metrics(ctx)
			if err != nil {
				return err
			}
			for _, h := range []struct{ key, what, metric string }{
				{"lag", "stored in stream→acked (sink lag histogram)", "jetstream_bridge_sink_lag_seconds"},
				{"held", "arrived in sink→acked (sink held histogram)", "jetstream_bridge_sink_held_seconds"},
			} {
				d := histDelta(after.histogram(h.metric), before.histogram(h.metric))
				b.report.add(5, id+"_"+h.key+"_p99", perSec+h.what+" p99", "ms", histQuantile(d, 0.99)*1e3)
			}
			// A latency target means something only while the machine has
			// CPU to spare: at ~200% busy on two cores every hop queues.
			if rep == 0 {
				b.report.note(id+"_p99", "%s (writers' window); relay and sink split below", use)
			}
			b.report.add(5, id+"_catchup", perSec+"writers stop → all applied", "ms", catchup.Seconds()*1e3)
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

// e2eSplit is the end-to-end latency in two parts, per event that the
// observer saw: commit → in the stream, and in the stream → applied.
type e2eSplit struct {
	relay, sink latencies
}

// appliedLatencies reads bench.applied and returns applied minus commit time
// per event, and the two parts of it for the events obs received.
func (b *bench) appliedLatencies(ctx context.Context, commits *clocks, obs *observer) (latencies, e2eSplit, error) {
	var split e2eSplit
	rows, err := b.dst.Query(ctx, "SELECT event_id, (extract(epoch FROM applied_at) * 1000000)::bigint FROM bench.applied")
	if err != nil {
		return nil, split, err
	}
	defer rows.Close()
	var out latencies
	for rows.Next() {
		var id string
		var us int64
		if err := rows.Scan(&id, &us); err != nil {
			return nil, split, err
		}
		seq, ok := seqOf(b.runID, id)
		if !ok {
			return nil, split, fmt.Errorf("applied event %q is not one of this run's", id)
		}
		c := commits.get(seq)
		if c == 0 {
			return nil, split, fmt.Errorf("applied event %s has no commit time", id)
		}
		applied := us * 1000
		out = append(out, max(float64(applied-c), 0)/1e9)
		if r := obs.recv.get(seq); r != 0 {
			split.relay = append(split.relay, max(float64(r-c), 0)/1e9)
			split.sink = append(split.sink, max(float64(applied-r), 0)/1e9)
		}
	}
	return out, split, rows.Err()
}
