package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// pollMode is one variant of the polling baseline (step 6).
type pollMode struct {
	name  string // in --poll-modes and in result ids: poll_<name>_p<N>_…
	label string // in the table
	sync  bool   // publish one row at a time and wait for its ack
}

// pollModes are the polling baseline's variants, in their default order.
var pollModes = []pollMode{
	// classic is the baseline the project names: the Ruby jetstream_bridge
	// gem's flush_outbox publishes one row at a time and waits for each
	// PubAck before the next.
	{name: "classic", label: "classic (sync publish per row, as the gem)", sync: true},
	// tuned is what a careful rewrite of the same design does: the whole
	// batch in flight at once, then one wait for all the acks.
	{name: "tuned", label: "tuned (async publish window)"},
}

// pollModeNames lists the variants for --poll-modes' default and errors.
func pollModeNames() []string {
	names := make([]string, len(pollModes))
	for i, m := range pollModes {
		names[i] = m.name
	}
	return names
}

// parsePollModes parses --poll-modes: a comma list of variant names, each at
// most once.
func parsePollModes(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if _, ok := pollModeNamed(f); !ok {
			return nil, fmt.Errorf("%q: expected %s, comma-separated", s, strings.Join(pollModeNames(), " and/or "))
		}
		for _, seen := range out {
			if seen == f {
				return nil, fmt.Errorf("%q: %s given twice", s, f)
			}
		}
		out = append(out, f)
	}
	return out, nil
}

func pollModeNamed(name string) (pollMode, bool) {
	for _, m := range pollModes {
		if m.name == name {
			return m, true
		}
	}
	return pollMode{}, false
}

// pollID is the prefix of a polling result id: poll_classic_p4, poll_tuned_p1.
func pollID(mode string, pollers int) string {
	return fmt.Sprintf("poll_%s_p%d", mode, pollers)
}

// polling is step 6: the polling outbox relay this project replaces, in two
// variants (--poll-modes). Each poller loops over
//
//	BEGIN
//	SELECT … FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED
//	classic: publish each row synchronously, one at a time, waiting for its ack
//	         (as the Ruby jetstream_bridge gem's flush_outbox does)
//	tuned:   publish every row asynchronously, then wait for all acks
//	UPDATE outbox SET published_at = now() WHERE id = ANY(…)
//	COMMIT
//
// sleeping --poll-interval when it found nothing. Both build the same
// envelopes with the same builder and run in the bench process on its own
// NATS connection. Each variant is measured like the relay, for every
// --pollers value: drain of --events rows, and commit→receipt latency at
// 1000 ev/s.
func (b *bench) polling(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 6: polling outbox baseline, %s, %v poller(s), batch %d, interval %s (%d repetition(s)) ...\n",
		strings.Join(o.PollModes, " and "), o.Pollers, o.PollBatch, o.PollInterval, o.Reps)
	nc, err := nats.Connect(b.natsURL, nats.Name("jetstream-bridge-bench-poller"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(64*o.PollBatch, 4096)))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	for rep := range o.Reps {
		for _, name := range o.PollModes {
			mode, _ := pollModeNamed(name) // validated by parse
			for _, n := range o.Pollers {
				if err := b.pollRun(ctx, js, mode, n, rep == 0); err != nil {
					return fmt.Errorf("%s polling, %d poller(s): %w", mode.name, n, err)
				}
			}
		}
	}
	return b.resetStream(ctx, false)
}

// pollRun measures one variant with n pollers once: drain rate, then
// latency at 1000/s. first adds the CPU note (first repetition only).
func (b *bench) pollRun(ctx context.Context, js jetstream.JetStream, mode pollMode, n int, first bool) error {
	id, what := pollID(mode.name, n), fmt.Sprintf("%s, %d poller(s)", mode.label, n)
	rate, use, err := b.pollDrain(ctx, js, mode, n)
	if err != nil {
		return err
	}
	b.report.add(6, id+"_drain_rate", what+": drain rate", "ev/s", rate, "js_publish_rate")
	if first {
		b.report.note(id+"_drain_rate", "%s", use)
	}
	lat, err := b.pollLatency(ctx, js, mode, n, 1000)
	if err != nil {
		return err
	}
	p50, p99, p999 := lat.percentiles()
	b.report.add(6, id+"_1000_p50", what+", 1000/s: commit→ack p50 (observed)", "ms", p50*1e3, "js_ack_p50")
	b.report.add(6, id+"_1000_p99", what+", 1000/s: commit→ack p99 (observed)", "ms", p99*1e3, "js_ack_p99")
	b.report.add(6, id+"_1000_p999", what+", 1000/s: commit→ack p99.9 (observed)", "ms", p999*1e3, "js_ack_p999")
	return nil
}

// pollDrain fills the polling outbox with --events rows, then measures how
// fast pollers of mode publish them all.
func (b *bench) pollDrain(ctx context.Context, js jetstream.JetStream, mode pollMode, pollers int) (float64, CPUUse, error) {
	o := b.opts
	if _, err := b.src.Exec(ctx, "TRUNCATE "+pollTable); err != nil {
		return 0, CPUUse{}, fmt.Errorf("empty the polling outbox: %w", err)
	}
	if err := b.resetStream(ctx, true); err != nil {
		return 0, CPUUse{}, err
	}
	w := b.newWriter(b.src, pollTable, 10, 0)
	w.total = o.Events
	if err := w.runFor(ctx); err != nil {
		return 0, CPUUse{}, err
	}
	stop := b.startPollers(ctx, js, mode, pollers)
	started := time.Now()
	target := uint64(o.Events)
	dw, err := b.waitDrain(ctx, target, max(5*time.Minute, time.Duration(o.Events/200)*time.Second), "pollers drain the outbox", nil)
	use := dw.snap0.use(b.cpuSnapshot(nil, nil))
	if perr := stop(); err == nil {
		err = perr
	}
	if err != nil {
		return 0, use, err
	}
	return dw.rate(target, started), use, nil
}

// pollLatency runs pollers of mode while writers commit 1-row transactions
// at rate for --duration, and returns commit→receipt latencies.
func (b *bench) pollLatency(ctx context.Context, js jetstream.JetStream, mode pollMode, pollers, rate int) (latencies, error) {
	if _, err := b.src.Exec(ctx, "TRUNCATE "+pollTable); err != nil {
		return nil, fmt.Errorf("empty the polling outbox: %w", err)
	}
	if err := b.resetStream(ctx, true); err != nil {
		return nil, err
	}
	obs, err := b.observe(ctx)
	if err != nil {
		return nil, err
	}
	defer obs.stop()
	stop := b.startPollers(ctx, js, mode, pollers)
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

// startPollers starts n pollers of mode; stop ends them and returns the first error.
func (b *bench) startPollers(ctx context.Context, js jetstream.JetStream, mode pollMode, n int) (stop func() error) {
	pctx, cancel := context.WithCancel(ctx)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range n {
		p := &poller{db: b.src, js: js, batch: b.opts.PollBatch, interval: b.opts.PollInterval, sync: mode.sync,
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

// poller is one outbox poller: classic (sync) or tuned (async window).
type poller struct {
	db       *pgxpool.Pool
	js       jetstream.JetStream
	builder  *envelope.Builder
	batch    int
	interval time.Duration
	// sync publishes one row at a time and waits for its ack (classic);
	// otherwise the whole batch is published asynchronously (tuned).
	sync bool
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

// once publishes one batch in one transaction; it returns how many rows it
// published. The rows are marked published only after every ack arrived.
func (p *poller) once(ctx context.Context) (int, error) {
	tx, err := p.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("poll: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	var (
		ids     []int64
		futures []jetstream.PubAckFuture
	)
	err = p.scan(ctx, tx, func(id int64, msg *nats.Msg) error {
		if p.sync {
			if _, err := p.js.PublishMsg(ctx, msg); err != nil {
				return fmt.Errorf("poll: publish: %w", err)
			}
		} else {
			f, err := p.js.PublishMsgAsync(msg)
			if err != nil {
				return fmt.Errorf("poll: publish: %w", err)
			}
			futures = append(futures, f)
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	if err := awaitAcks(ctx, futures); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `UPDATE `+pollTable+` SET published_at = now() WHERE id = ANY($1)`, ids); err != nil {
		return 0, fmt.Errorf("poll: mark published: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("poll: commit: %w", err)
	}
	return len(ids), nil
}

// scan selects and locks up to p.batch unpublished rows in tx and calls
// publish with each row's envelope, in id order, as the rows arrive.
func (p *poller) scan(ctx context.Context, tx pgx.Tx, publish func(id int64, msg *nats.Msg) error) error {
	rows, err := tx.Query(ctx, pollSelect, p.batch)
	if err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id               int64
			r                envelope.Row
			payload, headers string
		)
		if err := rows.Scan(&id, &r.EventID, &r.ResourceType, &r.ResourceID, &r.EventType, &payload, &headers,
			&r.Subject, &r.Destination, &r.TraceID, &r.OccurredAt); err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		r.Payload, r.Headers = []byte(payload), []byte(headers)
		m, err := p.builder.Build(&r, envelope.Position{})
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if err := publish(id, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header}); err != nil {
			return err
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("poll: %w", err)
	}
	return nil
}

// awaitAcks waits for every asynchronous publish of a batch.
func awaitAcks(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("poll: publish: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
