package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// sink is step 4: --sink-events relay-built envelopes (keys over
// sinkKeys resource ids) are in the stream before the sink starts; the sink
// applies them through a no-op SQL procedure, through a SQL function that
// upserts the payload into a table keyed by resource_id, and through a
// webhook served by the bench, at each --concurrency, each run on a fresh
// consumer and an empty inbox. The rate counts from the first
// acknowledgement to the last (consumer info); handler latency comes from
// the sink's own histogram. Next to each, in the same repetition, its limit
// (sinklimits.go): the same SQL straight to Postgres, and for the webhook
// the lesser of a bare HTTP client and Postgres taking the inbox rows alone.
func (b *bench) sink(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 4: sink applies %s events, SQL and webhook handlers, CONCURRENCY %v (%d repetition(s)) ...\n",
		thousands(int64(o.SinkEvents)), o.Concurrency, o.Reps)
	hook, err := startWebhook()
	if err != nil {
		return err
	}
	defer hook.close()
	txBatch := b.sinkTxBatch()
	// The ceilings below hold when every process shares every CPU; with
	// --postgres-cpus each side has cores of its own and they do not apply.
	shared := len(o.PostgresCPUs) == 0
	handlers := []struct{ kind, spec, label, call string }{
		{"sql", "sql:bench.noop", "no-op SQL", `CALL "bench"."noop"($1::jsonb)`},
		{"upsert", "sql:bench.upsert", "upsert SQL", `SELECT "bench"."upsert"($1::jsonb)`},
		{"http", hook.url, "webhook", ""},
	}
	for rep := range o.Reps {
		if err := b.resetStream(ctx, true); err != nil {
			return err
		}
		msgs, err := b.buildKeyed(o.SinkEvents, sinkKeys, nil, 0)
		if err != nil {
			return err
		}
		if _, err := b.publishAsync(ctx, msgs); err != nil {
			return err
		}
		events, err := prepareInboxArgs(msgs)
		if err != nil {
			return err
		}
		msgs = nil
		for _, h := range handlers {
			for _, c := range o.Concurrency {
				id := fmt.Sprintf("sink_%s_c%d", h.kind, c)
				label := fmt.Sprintf("%s handler, CONCURRENCY %d", h.label, c)
				limitID := fmt.Sprintf("direct_%s_c%d_rate", h.kind, c)
				var limitCost costs // the limit's CPU per event (SQL handlers)
				if h.kind == "http" {
					snap0 := b.cpuSnapshot(nil, nil)
					bare, err := bareHTTP(ctx, hook.url, events, c)
					if err != nil {
						return err
					}
					bareUse := snap0.use(b.cpuSnapshot(nil, nil))
					rows, rowsUse, err := b.directSQL(ctx, events, "", c, txBatch)
					if err != nil {
						return err
					}
					b.report.add(4, fmt.Sprintf("http_bare_c%d_rate", c), fmt.Sprintf("limit: bare HTTP client POSTs, %d conns", c), "ev/s", bare)
					b.report.add(4, fmt.Sprintf("inbox_rows_c%d_rate", c), fmt.Sprintf("limit: inbox rows alone, %d per tx, %d conns", txBatch, c), "ev/s", rows)
					b.report.add(4, limitID, fmt.Sprintf("limit: webhook (lesser of the two above), CONCURRENCY %d", c), "ev/s", min(bare, rows))
					// A webhook sink does both limits' work for every event.
					// When each limit alone keeps the shared cores busy, doing
					// both on them allows at most 1/(1/bare + 1/rows) events
					// per second, before any NATS or sink cost.
					ceiling := 1 / (min(bare, rows) * (1/bare + 1/rows))
					if shared {
						b.report.add(4, fmt.Sprintf("http_ceiling_c%d", c), fmt.Sprintf("webhook: highest ratio these shared cores allow (both limits' work per event, nothing else), CONCURRENCY %d", c), "×", ceiling)
					}
					if rep == 0 {
						b.report.note(limitID, "bare HTTP: %s, per event %s; inbox rows: %s, per event %s",
							bareUse, bareUse.perEvent(bare), rowsUse, rowsUse.perEvent(rows))
					}
				} else {
					rate, use, err := b.directSQL(ctx, events, h.call, c, txBatch)
					if err != nil {
						return err
					}
					limitCost = use.perEvent(rate)
					b.report.add(4, limitID, fmt.Sprintf("limit: %s straight to Postgres (inbox insert + call, %d per tx, %d conns)", h.label, txBatch, c), "ev/s", rate)
					if rep == 0 {
						b.report.note(limitID, "%s; per event %s", use, limitCost)
					}
				}
				profile := rep == 0 && c == o.Concurrency[len(o.Concurrency)-1]
				r, err := b.sinkRun(ctx, h.spec, c, o.SinkEvents, profile, id)
				if err != nil {
					return err
				}
				b.report.add(4, id+"_rate", label+": events applied", "ev/s", r.rate, limitID)
				b.report.add(4, id+"_p50", label+": handler p50 (sink histogram)", "ms", r.p50*1e3, "pg_commit_p50")
				b.report.add(4, id+"_p99", label+": handler p99 (sink histogram)", "ms", r.p99*1e3, "pg_commit_p99")
				b.report.add(4, id+"_per_tx", label+": events per inbox transaction", "ev", r.perTx)
				run := r.cpu.perEvent(r.rate)
				if rep == 0 {
					b.report.note(id+"_rate", "%s; per event %s; sink peak RSS %.1f MB", r.cpu, run, float64(r.rss)/(1<<20))
				}
				if shared && h.kind != "http" && limitCost.total() > 0 && run.total() > 0 {
					// The same SQL costs Postgres what it costs; what the sink
					// run adds is the NATS server's work and the sink's own.
					// Were the sink no dearer than the limit's client, the
					// shared cores would allow this fraction of the limit.
					floor := run.Postgres + run.NATS + limitCost.Bench
					b.report.add(4, fmt.Sprintf("%s_ceiling_c%d", h.kind, c), fmt.Sprintf("%s: highest ratio these shared cores allow (a sink costing what the limit's client costs), CONCURRENCY %d", h.label, c), "×", limitCost.total()/floor)
				}
			}
		}
	}
	return b.resetStream(ctx, false)
}

type sinkResult struct {
	rate, p50, p99 float64
	perTx          float64 // events per inbox transaction (distinct xmin of the inbox rows)
	rss            int64
	cpu            CPUUse
}

func (b *bench) sinkRun(ctx context.Context, handler string, concurrency, events int, profile bool, name string) (*sinkResult, error) {
	if err := b.resetSink(ctx); err != nil {
		return nil, err
	}
	sink, err := b.start(ctx, "sink", b.sinkBin, b.sinkEnv(handler, concurrency))
	if err != nil {
		return nil, err
	}
	started := time.Now()
	wait := func() {}
	if profile {
		est := time.Duration(float64(events) / math.Max(b.report.median("pg_1row_rate")/2, 500) * float64(time.Second))
		wait = b.profileCPU(ctx, sink, "step4-"+name+"-sink", min(max(est, 2*time.Second), 30*time.Second))
	}
	var (
		cons         jetstream.Consumer
		first, last  time.Time
		ackedAtFirst uint64
		snap0        cpuSnap
	)
	total := uint64(events)
	timeout := max(2*time.Minute, time.Duration(events/200)*time.Second)
	err = waitFor(ctx, timeout, 20*time.Millisecond, "sink applies every event", func() (bool, error) {
		if sink.exited() {
			return false, fmt.Errorf("sink exited: %v\n%s", sink.Err(), sink.tail(20))
		}
		if cons == nil {
			c, err := b.js.Consumer(ctx, streamName, durableName)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			cons = c
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err
		}
		now := time.Now()
		acked := info.Delivered.Consumer - uint64(info.NumAckPending)
		if acked > 0 && first.IsZero() {
			first, ackedAtFirst = now, acked
			snap0 = b.cpuSnapshot(nil, sink)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream >= total {
			last = now
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	r := &sinkResult{cpu: snap0.use(b.cpuSnapshot(nil, sink)), rss: sink.peakRSS()}
	wait()
	// The server has every ack; the sink counts an event just after its ack.
	const applied = `jetstream_bridge_sink_events_total{result="applied"}`
	var m promText
	if err := waitFor(ctx, 30*time.Second, 10*time.Millisecond, "sink counts every event", func() (bool, error) {
		var err error
		m, err = sink.metrics(ctx)
		return err == nil && m[applied] >= float64(total), err
	}); err != nil {
		return nil, fmt.Errorf("%w (sink reports %v events applied, want %d)", err, m[applied], total)
	}
	if err := sink.stop(30 * time.Second); err != nil {
		return nil, err
	}
	if got := m[applied]; got != float64(total) {
		return nil, fmt.Errorf("sink reports %v events applied, want %d", got, total)
	}
	var processed, txs int64
	if err := b.dst.QueryRow(ctx, "SELECT count(*) FILTER (WHERE status = 'processed'), count(DISTINCT xmin::text) FROM "+inboxTable).Scan(&processed, &txs); err != nil {
		return nil, err
	}
	r.perTx = float64(processed) / float64(max(txs, 1))
	if processed != int64(total) {
		return nil, fmt.Errorf("inbox holds %d processed events, want %d", processed, total)
	}
	r.rate = float64(total-ackedAtFirst) / last.Sub(first).Seconds()
	if ackedAtFirst >= total || math.IsInf(r.rate, 0) {
		r.rate = float64(total) / last.Sub(started).Seconds()
	}
	h := m.histogram("jetstream_bridge_sink_handler_seconds")
	r.p50, r.p99 = histQuantile(h, 0.5), histQuantile(h, 0.99)
	return r, nil
}

// webhook is the sink's webhook receiver in step 4: it reads the body and
// answers 204, like a fast application endpoint.
type webhook struct {
	srv  *http.Server
	url  string
	hits atomic.Int64
}

func startWebhook() (*webhook, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("webhook listener: %w", err)
	}
	h := &webhook{url: "http://" + l.Addr().String() + "/events"}
	h.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h.hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go h.srv.Serve(l)
	return h, nil
}

func (h *webhook) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h.srv.Shutdown(ctx)
}
