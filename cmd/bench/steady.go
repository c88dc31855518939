package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// steady is step 3: the relay runs while --writers connections insert
// 1-row transactions at each of --rates for --duration.
//
// Lag is committed events minus events received from the stream, sampled
// every 100 ms; "keeps up" means its least-squares slope stays under 2% of
// the write rate and the stream has every event within a second of the
// writers stopping. Latency is commit→receipt per event (see observer),
// cross-checked with the relay's own commit→ack histogram, whose clock
// starts at the commit timestamp Postgres puts in the WAL.
func (b *bench) steady(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 3: relay steady state at %v ev/s for %s each (%d repetition(s)) ...\n", ratesText(o.Rates), o.Duration, o.Reps)
	for rep := range o.Reps {
		if err := b.resetSource(ctx); err != nil {
			return err
		}
		if err := b.resetStream(ctx, false); err != nil {
			return err
		}
		relay, err := b.start(ctx, "relay", b.relayBin, b.relayEnv())
		if err != nil {
			return err
		}
		if err := relay.waitReady(ctx, time.Minute); err != nil {
			return err
		}
		obs, err := b.observe(ctx)
		if err != nil {
			return err
		}
		for _, rate := range o.Rates {
			id := "steady_" + rateLabel(rate)
			label := rateLabel(rate) + "/s"
			if rate == 0 {
				label = "max rate"
			}
			r, err := b.steadyRun(ctx, relay, obs, rate, rep == 0)
			if err != nil {
				obs.stop()
				return err
			}
			b.report.add(3, id+"_write_rate", label+": writers committed (1-row tx)", "ev/s", r.writeRate, "pg_1row_rate")
			b.report.add(3, id+"_relay_rate", label+": relay throughput (in stream)", "ev/s", r.relayRate, "js_publish_rate")
			b.report.add(3, id+"_lag_slope", label+": lag growth (least squares)", "ev/s", r.lagSlope)
			lag := b.report.add(3, id+"_max_lag", label+": max lag (committed − in stream)", "ev", r.maxLag)
			if rep == 0 {
				lag.Series = r.lags
			}
			send := b.report.add(3, id+"_send_lag", label+": max walsender send lag (WAL not yet sent)", "kB", maxOf(r.sendLags)/1000)
			if rep == 0 {
				for _, v := range r.sendLags {
					send.Series = append(send.Series, v/1000)
				}
			}
			b.report.add(3, id+"_catchup", label+": writers stop → stream complete", "ms", r.catchup.Seconds()*1e3)
			b.report.add(3, id+"_keeps_up", label+": keeps up (lag flat)", "yes/no", boolValue(r.keepsUp))
			b.report.add(3, id+"_p50", label+": commit→ack p50 (observed)", "ms", r.p50*1e3, "js_ack_p50")
			b.report.add(3, id+"_p99", label+": commit→ack p99 (observed)", "ms", r.p99*1e3, "js_ack_p99")
			b.report.add(3, id+"_p999", label+": commit→ack p99.9 (observed)", "ms", r.p999*1e3, "js_ack_p999")
			b.report.add(3, id+"_hist_p99", label+": commit→ack p99 (relay histogram, interpolated)", "ms", r.histP99*1e3, "js_ack_p99")
			b.report.add(3, id+"_hist_le25", label+": share ≤ 25 ms (relay histogram)", "%", r.histLE25*100)
			b.report.add(3, id+"_relay_cpu", label+": relay CPU per event", "µs", r.cpu.Relay/100/r.relayRate*1e6)
			if rep == 0 {
				b.report.note(id+"_relay_rate", "%s", r.cpu)
				b.report.note(id+"_relay_rate", "walsender on CPU %.0f%%, waiting for a CPU %.0f%%; relay on CPU %.0f%%, its threads waiting for a CPU %.0f%%",
					r.walsenderCPU, r.walsenderWait, r.relayCPU, r.relayWait)
				if r.missing > 0 {
					b.report.note(id+"_p99", "%d committed events never received", r.missing)
				}
			}
		}
		obs.stop()
		if err := relay.stop(30 * time.Second); err != nil {
			return err
		}
	}
	return nil
}

type steadyResult struct {
	writeRate, relayRate, lagSlope, maxLag float64
	catchup                                time.Duration
	keepsUp                                bool
	p50, p99, p999, histP99, histLE25      float64
	missing                                int
	cpu                                    CPUUse
	lags                                   []float64 // every 100 ms
	sendLags                               []float64 // walsender's sent position behind the WAL, bytes, every 100 ms
	walsenderCPU, walsenderWait            float64   // percent of wall time on CPU / waiting for a CPU
	relayCPU, relayWait                    float64
}

// steadyRun runs writers at rate against a running relay.
func (b *bench) steadyRun(ctx context.Context, relay *proc, obs *observer, rate int, first bool) (*steadyResult, error) {
	o := b.opts
	commits := &clocks{}
	w := b.newWriter(b.src, outboxTable, 1, float64(rate))
	w.duration, w.commits = o.Duration, commits
	m0, err := relay.metrics(ctx)
	if err != nil {
		return nil, err
	}
	base := obs.count.Load()
	snap0 := b.cpuSnapshot(relay, nil)
	// The walsender serving the relay, and the relay: their time on CPU and
	// their run-queue delay (runnable, waiting for a core).
	var walsender int
	_ = b.src.QueryRow(ctx, `SELECT coalesce(max(pid), 0) FROM pg_stat_replication
		WHERE application_name = 'jetstream-bridge-relay'`).Scan(&walsender)
	ws0, rs0 := readSchedStat(walsender), readSchedStat(relay.pid())

	var (
		mu                 sync.Mutex
		ts, lags, sendLags []float64
	)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case now := <-t.C:
				lag := float64(w.committed.Load() - (obs.count.Load() - base))
				// How far the walsender's sending is behind the WAL: tells a
				// slow Postgres side from a slow relay/JetStream side.
				var sendLag float64
				if err := b.src.QueryRow(sampleCtx, `SELECT coalesce(max(pg_current_wal_lsn() - sent_lsn), 0)::float8
					FROM pg_stat_replication WHERE application_name = 'jetstream-bridge-relay'`).Scan(&sendLag); err != nil {
					sendLag = math.NaN()
				}
				mu.Lock()
				ts, lags, sendLags = append(ts, now.Sub(start).Seconds()), append(lags, lag), append(sendLags, sendLag)
				mu.Unlock()
			}
		}
	})
	wait := func() {}
	if first {
		waitCPU := b.profileCPU(ctx, relay, "step3-"+rateLabel(rate)+"-relay", o.Duration)
		waitTrace := b.profileTrace(ctx, relay, "step3-"+rateLabel(rate)+"-relay", min(o.Duration, 3*time.Second))
		wait = func() { waitCPU(); waitTrace() }
	}
	err = w.runFor(ctx)
	stopped := time.Now()
	received := obs.count.Load() - base
	stopSampling()
	wg.Wait()
	snap1 := b.cpuSnapshot(relay, nil)
	ws1, rs1 := readSchedStat(walsender), readSchedStat(relay.pid())
	wait()
	if err != nil {
		return nil, err
	}
	committed := w.committed.Load()
	if err := waitFor(ctx, time.Minute, 5*time.Millisecond, "stream catches up with the writers", func() (bool, error) {
		if relay.exited() {
			return false, fmt.Errorf("relay exited: %v\n%s", relay.Err(), relay.tail(20))
		}
		return obs.count.Load()-base >= committed, nil
	}); err != nil {
		return nil, err
	}
	r := &steadyResult{cpu: snap0.use(snap1), catchup: time.Since(stopped)}
	r.walsenderCPU, r.walsenderWait = ws0.since(ws1)
	r.relayCPU, r.relayWait = rs0.since(rs1)
	m1, err := relay.metrics(ctx)
	if err != nil {
		return nil, err
	}
	r.writeRate = w.ratePerSec()
	r.relayRate = float64(received) / w.elapsed.Seconds()
	r.lagSlope = slope(ts, lags)
	r.lags, r.sendLags = lags, sendLags
	for _, l := range lags {
		r.maxLag = math.Max(r.maxLag, l)
	}
	r.keepsUp = r.lagSlope <= math.Max(0.02*r.writeRate, 5) && r.catchup < time.Second
	lat, missing := obs.latencies(commits, w.first.Load(), w.last.Load())
	r.p50, r.p99, r.p999 = lat.percentiles()
	r.missing = missing
	const hist = "jetstream_bridge_relay_commit_to_ack_seconds"
	d := histDelta(m1.histogram(hist), m0.histogram(hist))
	r.histP99, r.histLE25 = histQuantile(d, 0.99), histFractionBelow(d, 0.025)
	return r, nil
}

func maxOf(v []float64) float64 {
	m := math.NaN()
	for _, x := range v {
		if !math.IsNaN(x) && (math.IsNaN(m) || x > m) {
			m = x
		}
	}
	return m
}

func boolValue(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

func ratesText(rates []int) string {
	s := ""
	for i, r := range rates {
		if i > 0 {
			s += ", "
		}
		s += rateLabel(r)
	}
	return s
}
