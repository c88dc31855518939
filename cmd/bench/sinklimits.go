package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// The sink's limits in step 4: the same work without the sink in the way.
//
//   - SQL straight to Postgres: per event the sink's own inbox insert
//     (sink.InboxInsertSQL, the statement its batches send) and the
//     handler's call, TX_BATCH events per transaction sent as one pipeline,
//     CONCURRENCY connections, no NATS. What the sink adds (fetching,
//     parsing, lanes, acks) is what separates it from this rate.
//   - Webhooks: a bare HTTP client POSTing the same bodies to the same
//     receiver with CONCURRENCY goroutines, and Postgres taking the inbox
//     rows alone (the same pipeline without a handler). A webhook sink
//     cannot beat the slower of the two.

// sinkKeys is how many resource ids the sink's events spread over: the
// upsert handler's table has this many rows.
const sinkKeys = 10_000

// sinkTxBatch is the sink's TX_BATCH in this run (its default unless
// --sink-env sets it).
func (b *bench) sinkTxBatch() int {
	for _, kv := range b.opts.SinkEnv {
		if v, ok := strings.CutPrefix(kv, "TX_BATCH="); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return n
			}
		}
	}
	return 25
}

// inboxArgs are one event's parameters of the inbox insert, as the sink
// passes them.
type inboxArgs struct {
	args [12]any
	body []byte
}

// prepareInboxArgs parses msgs as the sink does and returns the insert's
// parameters for each (stream sequence i+1, first delivery).
func prepareInboxArgs(msgs []envelope.Message) ([]inboxArgs, error) {
	out := make([]inboxArgs, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		env, err := envelope.Parse(m.Body)
		if err != nil {
			return nil, fmt.Errorf("parse envelope: %w", err)
		}
		pos, ok := envelope.ParsePosition(m.Header)
		var lsn, txIndex any
		if ok {
			lsn, txIndex = m.Header.Get(envelope.HeaderCommitLSN), pos.TxIndex
		}
		hdr := []byte{'{'}
		first := true
		for k, vs := range m.Header {
			if !first {
				hdr = append(hdr, ',')
			}
			first = false
			hdr = envelope.AppendJSONBString(hdr, k)
			hdr = append(hdr, ':')
			hdr = envelope.AppendJSONBString(hdr, vs[0])
		}
		hdr = append(hdr, '}')
		out[i] = inboxArgs{body: m.Body, args: [12]any{env.EventID, env.EventType, env.ResourceType, env.ResourceID,
			[]byte(env.Payload), m.Subject, hdr, streamName, int64(i + 1), 1, lsn, txIndex}}
	}
	return out, nil
}

// directSQL applies events straight to Postgres: per event the inbox insert
// and, unless handler is "", the handler statement with the body as $1;
// txBatch events per transaction in one pipeline; conns connections. It
// returns events per second and the CPU it took. The inbox (and the upsert
// handler's table) is emptied before and after.
func (b *bench) directSQL(ctx context.Context, events []inboxArgs, handler string, conns, txBatch int) (float64, CPUUse, error) {
	var use CPUUse
	insert, err := sink.InboxInsertSQL(inboxTable)
	if err != nil {
		return 0, use, err
	}
	if err := b.truncateInbox(ctx); err != nil {
		return 0, use, err
	}
	pool, err := localenv.OpenPool(ctx, b.dstURL, int32(conns), map[string]string{"application_name": "jetstream-bridge-bench"})
	if err != nil {
		return 0, use, err
	}
	defer pool.Close()
	// Connect every connection before the clock starts.
	var warm []*pgxpool.Conn
	for range conns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return 0, use, err
		}
		warm = append(warm, c)
	}
	for _, c := range warm {
		c.Release()
	}

	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	snap0 := b.cpuSnapshot(nil, nil)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				lo := int(next.Add(int64(txBatch))) - txBatch
				if lo >= len(events) {
					return
				}
				hi := min(lo+txBatch, len(events))
				var batch pgx.Batch
				batch.Queue("BEGIN")
				for i := lo; i < hi; i++ {
					batch.Queue(insert, events[i].args[:]...)
					if handler != "" {
						batch.Queue(handler, events[i].body)
					}
				}
				batch.Queue("COMMIT")
				if err := pool.SendBatch(ctx, &batch).Close(); err != nil {
					errOnce.Do(func() { first = fmt.Errorf("direct SQL: %w", err) })
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	use = snap0.use(b.cpuSnapshot(nil, nil))
	if first != nil {
		return 0, use, first
	}
	var n int64
	if err := b.dst.QueryRow(ctx, "SELECT count(*) FROM "+inboxTable).Scan(&n); err != nil {
		return 0, use, err
	}
	if n != int64(len(events)) {
		return 0, use, fmt.Errorf("direct SQL: inbox holds %d rows, want %d", n, len(events))
	}
	return float64(len(events)) / took.Seconds(), use, b.truncateInbox(ctx)
}

// truncateInbox empties the inbox, its positions and the handlers' tables.
func (b *bench) truncateInbox(ctx context.Context) error {
	if _, err := b.dst.Exec(ctx, "TRUNCATE "+inboxTable+", "+inboxTable+"_positions, bench.applied, bench.resources"); err != nil {
		return fmt.Errorf("truncate inbox: %w", err)
	}
	return nil
}

// bareHTTP POSTs every body to url from conns goroutines with the headers
// the sink sends (no signature) and returns requests per second.
func bareHTTP(ctx context.Context, url string, events []inboxArgs, conns int) (float64, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	client := &http.Client{Transport: t, Timeout: 10 * time.Second}
	defer t.CloseIdleConnections()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(events) {
					return
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(events[i].body))
				if err == nil {
					req.Header["Content-Type"] = []string{envelope.ContentTypeJSON}
					req.Header["Idempotency-Key"] = []string{events[i].args[0].(string)}
					req.Header["User-Agent"] = []string{"jetstream-bridge-bench"}
					var resp *http.Response
					if resp, err = client.Do(req); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode/100 != 2 {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
				}
				if err != nil {
					errOnce.Do(func() { first = fmt.Errorf("bare HTTP client: %w", err) })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(len(events)) / time.Since(start).Seconds(), nil
}
