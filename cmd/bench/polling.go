package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// polling is step 6: the classic outbox relay this project replaces, written
// here as it is usually written (and as the Ruby gem's flush works): each
// poller loops over
//
//	BEGIN
//	SELECT … FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED
//	publish every row asynchronously, wait for all acks
//	UPDATE outbox SET published_at = now() WHERE id = ANY(…)
//	COMMIT
//
// sleeping --poll-interval when it found nothing. It builds the same
// envelopes with the same builder and runs in the bench process on its own
// NATS connection. Measured like the relay: drain of --events rows, and
// commit→receipt latency at 1000 ev/s.
func (b *bench) polling(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 6: polling outbox baseline, %v poller(s), batch %d, interval %s (%d repetition(s)) ...\n",
		o.Pollers, o.PollBatch, o.PollInterval, o.Reps)
	nc, err := nats.Connect(b.natsURL, nats.Name("jetstream-bridge-bench-poller"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(64*o.PollBatch, 4096)))
	if err != nil {
		return err
	}
	for rep := range o.Reps {
		for _, n := range o.Pollers {
			id := fmt.Sprintf("poll_p%d", n)
			rate, use, err := b.pollDrain(ctx, js, n)
			if err != nil {
				return err
			}
			b.report.add(6, id+"_drain_rate", fmt.Sprintf("%d poller(s): drain rate", n), "ev/s", rate, "js_publish_rate")
			if rep == 0 {
				b.report.note(id+"_drain_rate", "%s", use)
			}
			lat, err := b.pollLatency(ctx, js, n, 1000)
			if err != nil {
				return err
			}
			p50, p99, p999 := lat.percentiles()
			b.report.add(6, id+"_1000_p50", fmt.Sprintf("%d poller(s), 1000/s: commit→ack p50 (observed)", n), "ms", p50*1e3, "js_ack_p50")
			b.report.add(6, id+"_1000_p99", fmt.Sprintf("%d poller(s), 1000/s: commit→ack p99 (observed)", n), "ms", p99*1e3, "js_ack_p99")
			b.report.add(6, id+"_1000_p999", fmt.Sprintf("%d poller(s), 1000/s: commit→ack p99.9 (observed)", n), "ms", p999*1e3, "js_ack_p999")
		}
	}
	return b.resetStream(ctx, false)
}

func (b *bench) pollDrain(ctx context.Context, js jetstream.JetStream, pollers int) (float64, CPUUse, error) {
	o := b.opts
	if _, err := b.src.Exec(ctx, "TRUNCATE "+pollTable); err != nil {
		return 0, CPUUse{}, err
	}
	if err := b.resetStream(ctx, true); err != nil {
		return 0, CPUUse{}, err
	}
	w := b.newWriter(b.src, pollTable, 10, 0)
	w.total = o.Events
	if err := w.runFor(ctx); err != nil {
		return 0, CPUUse{}, err
	}
	stop := b.startPollers(ctx, js, pollers)
	started := time.Now()
	var (
		first, last time.Time
		firstCount  uint64
		snap0       cpuSnap
	)
	target := uint64(o.Events)
	err := waitFor(ctx, max(5*time.Minute, time.Duration(o.Events/200)*time.Second), 10*time.Millisecond, "pollers drain the outbox", func() (bool, error) {
		n, err := b.streamMsgs(ctx)
		if err != nil {
			return false, err
		}
		now := time.Now()
		if n > 0 && first.IsZero() {
			first, firstCount = now, n
			snap0 = b.cpuSnapshot(nil, nil)
		}
		if n >= target {
			last = now
			return true, nil
		}
		return false, nil
	})
	use := snap0.use(b.cpuSnapshot(nil, nil))
	if perr := stop(); err == nil {
		err = perr
	}
	if err != nil {
		return 0, use, err
	}
	rate := float64(target-firstCount) / last.Sub(first).Seconds()
	if target == firstCount || math.IsInf(rate, 0) {
		rate = float64(target) / last.Sub(started).Seconds()
	}
	return rate, use, nil
}

func (b *bench) pollLatency(ctx context.Context, js jetstream.JetStream, pollers, rate int) (latencies, error) {
	if _, err := b.src.Exec(ctx, "TRUNCATE "+pollTable); err != nil {
		return nil, err
	}
	if err := b.resetStream(ctx, true); err != nil {
		return nil, err
	}
	obs, err := b.observe(ctx)
	if err != nil {
		return nil, err
	}
	defer obs.stop()
	stop := b.startPollers(ctx, js, pollers)
	commits := &clocks{}
	w := b.newWriter(b.src, pollTable, 1, float64(rate))
	w.duration, w.commits = b.opts.Duration, commits
	err = w.runFor(ctx)
	if err == nil {
		committed := w.committed.Load()
		err = waitFor(ctx, time.Minute, 5*time.Millisecond, "pollers catch up", func() (bool, error) {
			return obs.count.Load() >= committed, nil
		})
	}
	if perr := stop(); err == nil {
		err = perr
	}
	if err != nil {
		return nil, err
	}
	lat, missing := obs.latencies(commits, w.first.Load(), w.last.Load())
	if missing > 0 {
		return nil, fmt.Errorf("polling baseline: %d committed events never received", missing)
	}
	return lat, nil
}

// startPollers starts n pollers; stop ends them and returns the first error.
func (b *bench) startPollers(ctx context.Context, js jetstream.JetStream, n int) (stop func() error) {
	pctx, cancel := context.WithCancel(ctx)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range n {
		p := &poller{db: b.src, js: js, batch: b.opts.PollBatch, interval: b.opts.PollInterval,
			builder: &envelope.Builder{Producer: appSrc, Subjects: envelope.Subjects{App: appSrc, Dest: appDst}}}
		wg.Go(func() {
			if err := p.run(pctx); err != nil && pctx.Err() == nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
				cancel()
			}
		})
	}
	return func() error {
		cancel()
		wg.Wait()
		return firstErr
	}
}

// poller is one classic outbox poller.
type poller struct {
	db       *pgxpool.Pool
	js       jetstream.JetStream
	builder  *envelope.Builder
	batch    int
	interval time.Duration
}

func (p *poller) run(ctx context.Context) error {
	for ctx.Err() == nil {
		n, err := p.once(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(p.interval):
			}
		}
	}
	return nil
}

const pollSelect = `SELECT id, event_id::text, resource_type, coalesce(resource_id, ''), event_type, payload::text,
	headers::text, coalesce(subject, ''), coalesce(destination, ''), coalesce(trace_id, ''), occurred_at::text
	FROM ` + pollTable + ` WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`

// once publishes one batch; it returns how many rows it published.
func (p *poller) once(ctx context.Context) (int, error) {
	tx, err := p.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("poll: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	rows, err := tx.Query(ctx, pollSelect, p.batch)
	if err != nil {
		return 0, fmt.Errorf("poll: %w", err)
	}
	var (
		ids     []int64
		futures []jetstream.PubAckFuture
	)
	for rows.Next() {
		var (
			id               int64
			r                envelope.Row
			payload, headers string
		)
		if err := rows.Scan(&id, &r.EventID, &r.ResourceType, &r.ResourceID, &r.EventType, &payload, &headers,
			&r.Subject, &r.Destination, &r.TraceID, &r.OccurredAt); err != nil {
			rows.Close()
			return 0, fmt.Errorf("poll: %w", err)
		}
		r.Payload, r.Headers = []byte(payload), []byte(headers)
		m, err := p.builder.Build(&r, envelope.Position{})
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("poll: %w", err)
		}
		f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("poll: publish: %w", err)
		}
		ids, futures = append(ids, id), append(futures, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("poll: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, fmt.Errorf("poll: publish: %w", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE `+pollTable+` SET published_at = now() WHERE id = ANY($1)`, ids); err != nil {
		return 0, fmt.Errorf("poll: mark published: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("poll: commit: %w", err)
	}
	return len(ids), nil
}
