package relay

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// The sync fence (SYNC_STANDBY_FENCE).
//
// A logical walsender on Postgres 16 and older decodes a commit as soon as
// it is flushed on the primary, before the synchronous standbys confirm it.
// Should the primary die in that window and a standby be promoted, the
// transaction is gone (its writer never saw the commit return), but the
// relay may have published its events already: phantom events downstream.
//
// The fence holds every decoded event until the synchronous standbys hold
// its commit. Postgres decides that itself, with its own quorum and
// priority rules (synchronous_standby_names, FIRST n or ANY n): a
// transaction that has an xid and wrote WAL, committed with
// synchronous_commit = on, returns only once the synchronous standbys have
// flushed its commit record, and WAL is flushed in order, so they then hold
// every earlier commit too. So one fence, a transactional logical decoding
// message (prefix jetstream_bridge_fence) in its own transaction on a
// connection of its own, covers every event decoded before it was sent.
// One fence is in flight at a time; events decoded meanwhile wait for the
// next one, so a burst shares one round trip. The stream skips the
// message (not the outbox's prefix).
//
// An event held at the fence is not done, so the slot is never confirmed
// past it. When the fence's connection fails, the events held then (and
// those decoded until a fence passes again) may come from a server that is
// gone: after a failover their transactions may have been erased. Once
// reconnected (the connection follows the primary), each such event is
// looked up by event id in the outbox of the server reached: found, it is
// published after the next fence; missing, it is a phantom and dropped
// (logged, counted, and done, so the old slot's position may pass it; the
// new primary's slot recovery republishes from the table whatever
// survived). Events of logical decoding messages have no row to look up and
// are published after the fence.
//
// Rows that slot recovery and backfill read from a table snapshot are
// committed on the server that reads them: they do not pass the fence.

// FenceMode is SYNC_STANDBY_FENCE.
type FenceMode string

const (
	// FenceAuto fences while synchronous_standby_names is set on the
	// server (read on connect and every 5 seconds).
	FenceAuto FenceMode = "auto"
	FenceOn   FenceMode = "on"  // always (every event costs a share of a round trip)
	FenceOff  FenceMode = "off" // never: events are published once decoded
)

// ParseFenceMode reads SYNC_STANDBY_FENCE; "" is auto.
func ParseFenceMode(s string) (FenceMode, error) {
	switch FenceMode(s) {
	case "", FenceAuto:
		return FenceAuto, nil
	case FenceOn, FenceOff:
		return FenceMode(s), nil
	}
	return "", fmt.Errorf("SYNC_STANDBY_FENCE=%q: want auto, on or off", s)
}

// FenceObserver is told about the fence, for metrics. Its methods are
// called from the fence's goroutine and must not block. An Observer that
// implements it gets the calls.
type FenceObserver interface {
	// FenceWait is how long one fence took (sent to COMMIT returned).
	FenceWait(time.Duration)
	// FenceDropped: an event held when the fence lost its server was not
	// in the outbox of the server reached afterwards (a phantom).
	FenceDropped()
}

const (
	fencePrefix    = "jetstream_bridge_fence" // of the fence's logical decoding messages
	fenceWarnAfter = 10 * time.Second
	fenceReread    = 5 * time.Second
	fenceRecheck   = 500 * time.Millisecond // before a held event missing from the outbox is dropped
	fenceSettleMax = 30 * time.Second       // longest wait for the transactions in progress at the fence to end
)

// fenceState is what the fence shows to readiness and metrics.
type fenceState struct {
	held   atomic.Int64 // events held
	oldest atomic.Int64 // unix nanoseconds the oldest held event arrived; 0 = none
	active atomic.Bool  // fencing (on, or auto with synchronous standbys)
}

// FenceHeld is the number of events held at the fence and how long the
// oldest has waited.
func (r *Relay) FenceHeld() (int, time.Duration) {
	n := r.fence.held.Load()
	at := r.fence.oldest.Load()
	if n == 0 || at == 0 {
		return int(n), 0
	}
	return int(n), time.Since(time.Unix(0, at))
}

// FenceActive reports whether events wait for the synchronous standbys.
func (r *Relay) FenceActive() bool { return r.fence.active.Load() }

type heldEvent struct {
	ev     *cdc.Event
	at     time.Time
	status heldStatus
}

type heldStatus uint8

const (
	heldSure    heldStatus = iota // decoded while the fence had its server
	heldUnsure                    // held while the fence had no server: look it up
	heldFound                     // looked up and found (or it has no row to look up)
	heldMissing                   // looked up and missing: a phantom
)

type fenceRequest struct {
	lookup []string // event ids to look up
}

type fenceReply struct {
	found  map[string]bool // of lookup
	fenced bool            // a fence passed (false: fencing is off on this server)
	err    error
}

// fenceLoop passes events from in to out in order, each once the
// synchronous standbys hold its commit. It closes out when in is closed
// (and what it held is passed or ctx ended) or ctx ends.
func (r *Relay) fenceLoop(ctx context.Context, in <-chan *cdc.Event, out chan<- *cdc.Event) error {
	defer close(out)
	defer r.fence.held.Store(0)
	requests := make(chan fenceRequest)
	replies := make(chan fenceReply, 1)
	workerCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	go r.fenceWorker(workerCtx, requests, replies)

	var (
		queue    []heldEvent
		inFlight int  // events covered by the fence in flight (a prefix of queue)
		pending  bool // a request is in flight
		lookedUp []int
		sent     time.Time
		lost     bool // the fence's connection failed and no fence passed since
		warned   bool
		closed   bool
	)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	publish := func(ev *cdc.Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	note := func() {
		r.fence.held.Store(int64(len(queue)))
		if len(queue) == 0 {
			r.fence.oldest.Store(0)
		} else {
			r.fence.oldest.Store(queue[0].at.UnixNano())
		}
	}
	unsure := func(ev *cdc.Event) heldStatus {
		if ev.Message || ev.Err != nil {
			// No outbox row to look up: published after the fence.
			return heldFound
		}
		return heldUnsure
	}
	for {
		// Send a fence for everything held, when none is in flight; with
		// nothing held, now and then an empty request, so that auto reads
		// synchronous_standby_names again while events pass at once.
		if !pending && (len(queue) > 0 || r.opts.Fence == FenceAuto && time.Since(sent) > fenceReread) {
			req := fenceRequest{}
			lookedUp = lookedUp[:0]
			for i, h := range queue {
				if h.status == heldUnsure {
					req.lookup = append(req.lookup, h.ev.Row.EventID)
					lookedUp = append(lookedUp, i)
				}
			}
			select {
			case requests <- req:
				inFlight, pending, sent, warned = len(queue), true, time.Now(), false
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if closed && len(queue) == 0 {
			return nil
		}
		var input <-chan *cdc.Event
		if !closed {
			input = in
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-input:
			if !ok {
				closed = true
				continue
			}
			if len(queue) == 0 && !lost && !r.fence.active.Load() {
				// Nothing to fence on this server: pass at once.
				if !publish(ev) {
					return ctx.Err()
				}
				continue
			}
			h := heldEvent{ev: ev, at: time.Now()}
			if lost {
				h.status = unsure(ev)
			}
			queue = append(queue, h)
			note()
		case rep := <-replies:
			n := inFlight
			inFlight, pending = 0, false
			if rep.err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !lost {
					r.log.Warn().Err(rep.err).Int("held", len(queue)).
						Msg("sync fence connection failed: held events will be looked up on the server reached next")
				}
				lost = true
				for i := range queue {
					if queue[i].status == heldSure {
						queue[i].status = unsure(queue[i].ev)
					}
				}
				continue
			}
			if fo, ok := r.obs.(FenceObserver); ok && rep.fenced {
				fo.FenceWait(time.Since(sent))
			}
			for _, i := range lookedUp {
				if rep.found[queue[i].ev.Row.EventID] {
					queue[i].status = heldFound
				} else {
					queue[i].status = heldMissing
				}
			}
			// Release the covered prefix in order; a phantom is dropped.
			for _, h := range queue[:n] {
				if h.status != heldMissing {
					if !publish(h.ev) {
						return ctx.Err()
					}
					continue
				}
				r.log.Error().Str("event_id", h.ev.Row.EventID).Str("commit_lsn", h.ev.CommitLSN.String()).
					Msg("sync fence: an event decoded before the fence lost its server is not in the outbox of the server reached since (its transaction was lost in a failover): not published")
				if fo, ok := r.obs.(FenceObserver); ok {
					fo.FenceDropped()
				}
				h.ev.Done()
			}
			queue = append(queue[:0], queue[n:]...)
			lost = false
			for _, h := range queue {
				if h.status == heldUnsure {
					lost = true // decoded while lost, after this round began
				}
			}
			note()
		case <-tick.C:
			if inFlight > 0 && !warned && time.Since(sent) > fenceWarnAfter {
				warned = true
				r.log.Warn().Int("held", len(queue)).Dur("waiting", time.Since(sent).Round(time.Second)).
					Msg("sync fence: the synchronous standbys have not confirmed for a while; events are held (writers with synchronous_commit wait too)")
			}
		}
	}
}

// fenceWorker owns the fence's connection: for each request it looks up
// the event ids asked for, then (when fencing) commits a transaction with
// an xid under synchronous_commit = on, and replies. After a failure the
// next request waits a backoff before it reconnects; the connection string
// may list several hosts, and target_session_attrs=read-write (set here
// when absent) leads it to the primary.
func (r *Relay) fenceWorker(ctx context.Context, requests <-chan fenceRequest, replies chan<- fenceReply) {
	var (
		conn     *pgx.Conn
		readAt   time.Time
		wait     = backoff.New(250*time.Millisecond, 2*time.Second) // short: a failover is when it matters
		failed   bool
		mode     = r.opts.Fence
		closeNow = func() {
			if conn != nil {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				conn.Close(cctx)
				cancel()
				conn = nil
			}
		}
	)
	defer closeNow()
	outbox, _ := migrations.QuoteQualified(r.opts.OutboxTable)
	for {
		var req fenceRequest
		select {
		case <-ctx.Done():
			return
		case req = <-requests:
		}
		if failed && !wait.Wait(ctx) {
			return
		}
		rep := fenceReply{}
		err := func() error {
			if conn == nil {
				c, err := r.connectFence(ctx)
				if err != nil {
					return err
				}
				conn, readAt = c, time.Time{}
			}
			if mode == FenceAuto && time.Since(readAt) > fenceReread {
				var names string
				if err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&names); err != nil {
					return fmt.Errorf("read synchronous_standby_names: %w", err)
				}
				readAt = time.Now()
				on := names != ""
				if on != r.fence.active.Load() {
					r.log.Info().Bool("fencing", on).Str("synchronous_standby_names", names).
						Msg("sync fence: events wait for the synchronous standbys while synchronous_standby_names is set")
				}
				r.fence.active.Store(on)
			}
			if r.fence.active.Load() {
				// COMMIT waits for the synchronous standbys only in a
				// transaction that has an xid and wrote WAL before its
				// commit record (txid_current() alone commits without
				// waiting). A transactional logical decoding message does
				// both, needs no privilege, and the relay's stream skips
				// its prefix.
				if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(true, '"+fencePrefix+"', '')"); err != nil {
					return fmt.Errorf("sync fence: %w", err)
				}
				rep.fenced = true
			}
			// Look held events up only after the fence: a writer whose
			// commit is flushed here (and decoded) but still waits for the
			// synchronous standbys is invisible to other sessions until
			// then, as after a restart or a promotion while the standby
			// connects; looked up earlier it would pass for a phantom.
			if len(req.lookup) > 0 {
				if err := r.waitSettled(ctx, conn); err != nil {
					return err
				}
				found, err := lookupHeld(ctx, conn, outbox, req.lookup)
				if err != nil {
					return err
				}
				var missing []string
				for _, id := range req.lookup {
					if !found[id] {
						missing = append(missing, id)
					}
				}
				if len(missing) > 0 {
					// A writer released by the same confirmation as the
					// fence becomes visible a moment after it: one more
					// look before an event is dropped for good.
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(fenceRecheck):
					}
					again, err := lookupHeld(ctx, conn, outbox, missing)
					if err != nil {
						return err
					}
					for id := range again {
						found[id] = true
					}
				}
				rep.found = found
			}
			return nil
		}()
		if err != nil {
			closeNow()
			rep = fenceReply{err: err}
		}
		failed = err != nil
		if !failed {
			wait.Reset()
		}
		select {
		case replies <- rep:
		case <-ctx.Done():
			return
		}
	}
}

// waitSettled waits until every transaction in progress now has ended, for
// at most fenceSettleMax. A writer released by the confirmation that
// released the fence is committed but becomes visible only when it leaves
// the server's list of running transactions, a moment later; after this
// wait its rows are visible to a new snapshot. An unrelated transaction
// open longer than the bound (idle in transaction) ends the wait early,
// with a warning; the recheck after the lookup still applies.
func (r *Relay) waitSettled(ctx context.Context, conn *pgx.Conn) error {
	var xmax string
	if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").Scan(&xmax); err != nil {
		return fmt.Errorf("sync fence: read snapshot: %w", err)
	}
	deadline := time.Now().Add(fenceSettleMax)
	for {
		var settled bool
		if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::xid8", xmax).Scan(&settled); err != nil {
			return fmt.Errorf("sync fence: read snapshot: %w", err)
		}
		if settled {
			return nil
		}
		if time.Now().After(deadline) {
			r.log.Warn().Dur("waited", fenceSettleMax).
				Msg("sync fence: a transaction older than the fence is still open; looking held events up anyway")
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lookupHeld returns which of ids the outbox of conn's server holds.
func lookupHeld(ctx context.Context, conn *pgx.Conn, outbox string, ids []string) (map[string]bool, error) {
	rows, err := conn.Query(ctx, "SELECT event_id::text FROM "+outbox+" WHERE event_id = ANY($1)", ids)
	if err != nil {
		return nil, fmt.Errorf("look up held events: %w", err)
	}
	found := make(map[string]bool, len(ids))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("look up held events: %w", err)
		}
		found[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up held events: %w", err)
	}
	return found, nil
}

// connectFence opens the fence's connection on a writable server.
func (r *Relay) connectFence(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(r.opts.ConnString)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "jetstream-bridge-relay-fence"
	cfg.RuntimeParams["synchronous_commit"] = "on"
	if cfg.ValidateConnect == nil {
		// Only a writable server can commit a transaction with an xid.
		cfg.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect sync fence: %w", err)
	}
	return conn, nil
}
