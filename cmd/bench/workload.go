package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Every event of a run has a sequence number, unique within the run, written
// into its event id: run id, then the number in the last 12 hex digits. A
// receiver recovers the number from Nats-Msg-Id (or the envelope's event_id)
// and looks up when the writer saw the event's transaction commit.

func eventID(run uint32, seq uint64) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", run, seq)
}

// seqOf returns the sequence number in an event id of run.
func seqOf(run uint32, id string) (uint64, bool) {
	if len(id) != 36 {
		return 0, false
	}
	r, err := strconv.ParseUint(id[:8], 16, 32)
	if err != nil || uint32(r) != run {
		return 0, false
	}
	n, err := strconv.ParseUint(id[24:], 16, 64)
	return n, err == nil
}

// keys is how many distinct (resource_type, resource_id) keys events spread
// over: many, so that the sink's per-key lanes rarely serialize.
const keys = 50_000

// payload is a realistic ~300-byte jsonb payload, as in envelope's
// BenchmarkBuild, with the event's number as its id.
func payload(seq uint64) []byte {
	b := make([]byte, 0, 320)
	b = append(b, `{"id": `...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `, "name": "Ada Lovelace", "plan": "enterprise", "email": "ada.lovelace@example.com", `+
		`"roles": ["admin", "billing"], "active": true, "address": {"city": "London", "line1": "12 St James's Square", `+
		`"country": "GB", "postcode": "SW1Y 4JH"}, "balance": 1234.56, "created_at": "2026-11-24T15:08:12.123456+00:00"}`...)
	return b
}

// row is the outbox row the writers insert for seq, as the relay decodes it.
func row(run uint32, seq uint64) *envelope.Row {
	return &envelope.Row{
		EventID:      eventID(run, seq),
		ResourceType: "user",
		ResourceID:   strconv.FormatUint(seq%keys, 10),
		EventType:    "user.updated",
		Payload:      payload(seq),
		OccurredAt:   time.Now().UTC().Format("2006-01-02 15:04:05.999999-07"),
	}
}

// clocks maps event numbers to a time (unix nanoseconds), lock-free, in
// lazily allocated pages.
type clocks struct {
	pages [1 << 12]atomic.Pointer[clockPage]
}

const pageBits = 16

type clockPage [1 << pageBits]atomic.Int64

func (c *clocks) page(seq uint64) *clockPage {
	i := seq >> pageBits
	if i >= uint64(len(c.pages)) {
		return nil
	}
	if p := c.pages[i].Load(); p != nil {
		return p
	}
	c.pages[i].CompareAndSwap(nil, new(clockPage))
	return c.pages[i].Load()
}

// set records t for seq unless a time is already recorded.
func (c *clocks) set(seq uint64, t int64) {
	if p := c.page(seq); p != nil {
		p[seq&(1<<pageBits-1)].CompareAndSwap(0, t)
	}
}

// get returns the time of seq, 0 when none.
func (c *clocks) get(seq uint64) int64 {
	i := seq >> pageBits
	if i >= uint64(len(c.pages)) {
		return 0
	}
	p := c.pages[i].Load()
	if p == nil {
		return 0
	}
	return p[seq&(1<<pageBits-1)].Load()
}

// writer plays the applications: conns connections inserting outbox rows,
// rowsPerTx per transaction, at rate events per second (0: as fast as
// Postgres allows), open loop: a late transaction does not delay the
// schedule of the next.
type writer struct {
	pool      *pgxpool.Pool
	table     string
	conns     int
	rowsPerTx int
	rate      float64
	total     int           // events to write; 0 = until the duration ends
	duration  time.Duration // 0 = until total is written
	run       uint32
	seq       *atomic.Uint64
	commits   *clocks // commit times by event number; nil = not recorded

	first, last atomic.Uint64 // event numbers written: [first, last)
	committed   atomic.Int64
	latencies   []float64 // commit round trips, seconds (with recordLatency)
	recordLat   bool
	elapsed     time.Duration
	// viaHelper writes each event with jetstream_publish (its event id made
	// in SQL) instead of an INSERT, so that the pool's
	// jetstream_bridge.outbox_mode decides between a row and a message.
	viaHelper bool
	// stmt, when set, is written instead: a statement taking the same
	// three parameters (event id, resource id, payload).
	stmt string
}

func (b *bench) newWriter(pool *pgxpool.Pool, table string, rowsPerTx int, rate float64) *writer {
	return &writer{pool: pool, table: table, conns: b.opts.Writers, rowsPerTx: rowsPerTx, rate: rate,
		run: b.runID, seq: &b.seq}
}

// run writes until total events are committed or duration passes. It
// returns the first failed write. Statements are not cancelled by ctx (an
// insert cancelled in flight might commit uncounted); ctx only stops new ones.
func (w *writer) runFor(ctx context.Context) error {
	insert := `INSERT INTO ` + w.table + ` (event_id, resource_type, resource_id, event_type, payload)
		VALUES ($1, 'user', $2, 'user.updated', $3)`
	if w.viaHelper {
		// The same arguments; $1 is only cast, so the statement keeps them.
		insert = `SELECT jetstream_publish('user', 'user.updated', $3::jsonb, $2) WHERE $1::uuid IS NOT NULL`
	}
	if w.stmt != "" {
		insert = w.stmt
	}
	stmtCtx := context.WithoutCancel(ctx)
	var (
		txs     atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		err     error
		latMu   sync.Mutex
	)
	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := time.Time{}
	if w.duration > 0 {
		deadline = start.Add(w.duration)
	}
	// Event numbers are handed out per transaction; [first, last) covers
	// everything this writer wrote (and a few numbers never used).
	w.first.Store(w.seq.Load())
	for range w.conns {
		wg.Go(func() {
			var lats []float64
			defer func() {
				latMu.Lock()
				w.latencies = append(w.latencies, lats...)
				latMu.Unlock()
			}()
			for stop.Err() == nil {
				k := txs.Add(1) - 1
				n := w.rowsPerTx
				if w.total > 0 {
					left := w.total - int(k)*w.rowsPerTx
					if left <= 0 {
						return
					}
					n = min(n, left)
				}
				if w.rate > 0 {
					due := start.Add(time.Duration(float64(k*int64(w.rowsPerTx)) / w.rate * float64(time.Second)))
					if !deadline.IsZero() && !due.Before(deadline) {
						return
					}
					if d := time.Until(due); d > 0 {
						t := time.NewTimer(d)
						select {
						case <-stop.Done():
							t.Stop()
							return
						case <-t.C:
						}
					}
				}
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return
				}
				first := w.seq.Add(uint64(n)) - uint64(n)
				t0 := time.Now()
				var e error
				if n == 1 {
					_, e = w.pool.Exec(stmtCtx, insert, eventID(w.run, first), strconv.FormatUint(first%keys, 10), payload(first))
				} else {
					var batch pgx.Batch // one round trip, one implicit transaction
					for i := range uint64(n) {
						s := first + i
						batch.Queue(insert, eventID(w.run, s), strconv.FormatUint(s%keys, 10), payload(s))
					}
					e = w.pool.SendBatch(stmtCtx, &batch).Close()
				}
				if e != nil {
					errOnce.Do(func() { err = fmt.Errorf("insert into %s: %w", w.table, e) })
					cancel()
					return
				}
				now := time.Now()
				if w.commits != nil {
					for i := range uint64(n) {
						w.commits.set(first+i, now.UnixNano())
					}
				}
				if w.recordLat {
					lats = append(lats, now.Sub(t0).Seconds())
				}
				w.committed.Add(int64(n))
			}
		})
	}
	wg.Wait()
	w.elapsed = time.Since(start)
	w.last.Store(w.seq.Load())
	return err
}

// ratePerSec is the committed events per second over the writer's run.
func (w *writer) ratePerSec() float64 {
	return float64(w.committed.Load()) / w.elapsed.Seconds()
}
