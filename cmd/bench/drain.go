package main

import (
	"context"
	"fmt"
	"math"
	"time"
)

// drain is step 2: --events rows wait in the outbox (committed after the
// slot was created, so they are in its stream) before the relay starts. The
// rate counts from the first message in the stream to the last, by stream
// info; start-up (connect, start replication, first decode) is reported on
// its own. Peak RSS is the relay's VmHWM at the end.
func (b *bench) drain(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 2: relay drains a backlog of %s events (%d repetition(s)) ...\n", thousands(int64(o.Events)), o.Reps)
	for rep := range o.Reps {
		if err := b.freshRelay(ctx); err != nil {
			return err
		}
		w := b.newWriter(b.src, outboxTable, 10, 0)
		w.total = o.Events
		if err := w.runFor(ctx); err != nil {
			return err
		}
		b.report.add(2, "backlog_insert_rate", "backlog written (10-row tx; slot exists, relay stopped)", "ev/s", w.ratePerSec(), "pg_10row_rate")

		relay, err := b.start(ctx, "relay", b.relayBin, b.relayEnv())
		if err != nil {
			return err
		}
		started := time.Now()
		var profiled func()
		if rep == 0 {
			est := time.Duration(float64(o.Events) / math.Max(b.report.median("js_publish_rate"), 1000) * 1.5 * float64(time.Second))
			profiled = b.profileCPU(ctx, relay, "step2-drain-relay", min(max(est, 2*time.Second), 30*time.Second))
		}
		target := uint64(o.Events)
		timeout := max(2*time.Minute, time.Duration(o.Events/500)*time.Second)
		dw, err := b.waitDrain(ctx, target, timeout, "relay drain", relay)
		if err != nil {
			return err
		}
		use := dw.snap0.use(b.cpuSnapshot(relay, nil))
		// The stream is complete when the server stored the last message;
		// the relay counts it once its ack has come back.
		var m promText
		if err := waitFor(ctx, 30*time.Second, 10*time.Millisecond, "relay counts every ack", func() (bool, error) {
			var err error
			m, err = relay.metrics(ctx)
			return err == nil && m["jetstream_bridge_relay_events_published_total"] >= float64(o.Events), err
		}); err != nil {
			return fmt.Errorf("%w (relay reports %v events published, want %d)", err, m["jetstream_bridge_relay_events_published_total"], o.Events)
		}
		if got := m["jetstream_bridge_relay_events_published_total"]; got != float64(o.Events) {
			return fmt.Errorf("relay reports %v events published, want %d", got, o.Events)
		}
		rss := relay.peakRSS()
		relayCPU, _ := procCPU(relay.pid(), false)
		if profiled != nil {
			profiled()
			b.profileHeap(ctx, relay, "step2-drain-relay")
		}
		if err := relay.stop(30 * time.Second); err != nil {
			return err
		}
		b.report.add(2, "relay_drain_rate", "relay drain rate (first to last message in stream)", "ev/s", dw.rate(target, started), "js_publish_rate")
		b.report.add(2, "relay_drain_startup", "relay start to first message in stream", "ms", dw.first.Sub(started).Seconds()*1e3)
		b.report.add(2, "relay_drain_cpu", "relay CPU per event (whole run incl. start-up)", "µs", relayCPU/float64(o.Events)*1e6)
		b.report.add(2, "relay_drain_rss", "relay peak RSS (VmHWM) while draining", "MB", float64(rss)/(1<<20))
		if rep == 0 {
			b.report.note("relay_drain_rate", "%s", use)
			b.report.note("relay_drain_rss", "go heap in use at the end %.1f MB, process RSS %.1f MB (relay metrics)",
				m["go_memstats_heap_inuse_bytes"]/(1<<20), m["process_resident_memory_bytes"]/(1<<20))
		}
	}
	return nil
}

// drainWindow is when a stream filled up to a target: the first poll that saw
// a message (the count then, and a CPU snapshot) and the poll that saw them all.
type drainWindow struct {
	first, last time.Time
	firstCount  uint64
	snap0       cpuSnap
}

// waitDrain polls the stream every 10 ms until it holds target messages;
// p (may be nil) is the process under test, which must not exit meanwhile
// and is included in the CPU snapshot.
func (b *bench) waitDrain(ctx context.Context, target uint64, timeout time.Duration, what string, p *proc) (drainWindow, error) {
	var w drainWindow
	err := waitFor(ctx, timeout, 10*time.Millisecond, what, func() (bool, error) {
		if p != nil && p.exited() {
			return false, fmt.Errorf("%s exited: %v\n%s", p.name, p.Err(), p.tail(20))
		}
		n, err := b.streamMsgs(ctx)
		if err != nil {
			return false, err
		}
		now := time.Now()
		if n > 0 && w.first.IsZero() {
			w.first, w.firstCount = now, n
			w.snap0 = b.cpuSnapshot(p, nil)
		}
		if n >= target {
			w.last = now
			return true, nil
		}
		return false, nil
	})
	return w, err
}

// rate is target events over the window, from the first message to the last;
// from started when one poll saw them all.
func (w drainWindow) rate(target uint64, started time.Time) float64 {
	rate := float64(target-w.firstCount) / w.last.Sub(w.first).Seconds()
	if target == w.firstCount || math.IsInf(rate, 0) {
		rate = float64(target) / w.last.Sub(started).Seconds()
	}
	return rate
}
