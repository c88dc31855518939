package sink

// Partitioned consumption (PARTITIONS=N): one owner per partition, fenced in
// the sink's own database.
//
// Every sink process is a member: it renews a lease row in the members
// table every tick. Members whose lease has expired are gone. Each member
// computes the same assignment of partitions to the live members (Assign),
// releases the partitions it owns that are assigned elsewhere, and claims
// the ones assigned to it once they are free. A claim is a compare-and-set
// on the partition row's epoch; the owner consumes the partition's own
// durable ({durable}-p{N}) with a Sink whose every apply transaction checks,
// just before COMMIT and with FOR SHARE, that the row still names it with
// its epoch. A takeover UPDATE waits for those locks, so once it commits,
// every later transaction of the old owner finds another epoch and rolls
// back: the old owner never commits an apply, and so never acks, for a
// partition it lost.
//
// Order across owners. A message the old owner held unacknowledged is
// redelivered by the server, before any message not yet delivered, but only
// once its ack wait has run out. A new owner that pulled earlier could
// receive a later event of the same key first. So:
//   - a partition released cleanly (the old owner stopped pulling, applied
//     and acked everything it held) is taken at once;
//   - any other (handed back, self-fenced, crashed) is taken only when the
//     old owner's lease plus AckWait plus a margin has passed. An owner
//     pulls and sends heartbeats for a partition only while it has
//     confirmed, within half a lease, that it still owns it; so by then it
//     has sent neither for longer than the ack wait (the margin covers the
//     last pull request, FetchWait), and the server has made every message
//     it held due for redelivery, ahead of new ones. The new owner also
//     waits, before its first pull, until the consumer's last delivery is
//     due (PartitionedOptions.Quiet), in case the old owner got messages
//     later than its lease says.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sqlstate"
)

// ErrFenced is returned by a partition's Sink whose ownership was taken
// over: the transaction that found out rolled back.
var ErrFenced = errors.New("partition ownership lost")

// ErrPartitionMismatch stops a sink whose PARTITIONS differs from the
// Bridge-Partitions header of a message it received.
var ErrPartitionMismatch = errors.New("PARTITIONS does not match the relay's")

// PartitionDurable is the durable consumer of partition p.
func PartitionDurable(durable string, p int) string { return durable + "-p" + strconv.Itoa(p) }

// Fence is the ownership a partition's Sink checks in every apply
// transaction.
type Fence struct {
	Table     string // the partitions table, quoted and qualified
	Durable   string
	Partition int
	Owner     string
	Epoch     int64
}

func (f *Fence) check() string {
	return `SELECT 1 FROM ` + f.Table + ` WHERE durable = $1 AND partition = $2 AND owner = $3 AND epoch = $4 FOR SHARE`
}

// batchCheck fails (division by zero) when the ownership is gone, so that a
// batch pipeline rolls back; its events are then applied on their own, where
// the check names ErrFenced.
func (f *Fence) batchCheck() string {
	return `SELECT 1 / count(*) FROM (` + f.check() + `) f`
}

func (f *Fence) args() []any { return []any{f.Durable, f.Partition, f.Owner, f.Epoch} }

// fencedDB checks the fence before each transaction it began commits.
type fencedDB struct {
	DB
	f *Fence
}

func (db fencedDB) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := db.DB.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return fencedTx{Tx: tx, f: db.f}, nil
}

type fencedTx struct {
	pgx.Tx
	f *Fence
}

// fenceCheckError is a failed ownership check: retried like a lost
// connection, never counted against the handler (it has no Unwrap on
// purpose, so that the commit classification does not see a Postgres error
// of the handler's).
type fenceCheckError struct{ err error }

func (e fenceCheckError) Error() string { return "check partition ownership: " + e.err.Error() }

func (t fencedTx) Commit(ctx context.Context) error {
	var one int
	err := t.Tx.QueryRow(ctx, t.f.check(), t.f.args()...).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		t.Tx.Rollback(ctx) //nolint:errcheck // the deferred Rollback of the caller tries again
		return fmt.Errorf("partition %d, epoch %d: %w", t.f.Partition, t.f.Epoch, ErrFenced)
	case err != nil:
		return fenceCheckError{err}
	}
	return t.Tx.Commit(ctx)
}

// partitionHooks are what a Sink does differently when it consumes one
// partition; see Options.Fence and Options.Partitions.
type partitionHooks struct {
	fence      *Fence
	partitions int           // expected Bridge-Partitions; 0 = no check
	drainFor   time.Duration // on stop, apply what is held for up to this long before handing back
	hard       atomic.Bool   // stop now: no drain, no more heartbeats
	drained    atomic.Bool   // the last stop applied everything held
	// trusted is the local time (UnixNano) until which the ownership is
	// confirmed; pulls and heartbeats wait outside it. 0: not partitioned.
	trusted atomic.Int64
}

// owning reports whether the sink may pull and send heartbeats now.
func (h *partitionHooks) owning() bool {
	if h.hard.Load() {
		return false
	}
	t := h.trusted.Load()
	return t == 0 || time.Now().UnixNano() < t
}

// waitOwning waits until owning, or ctx ends (false).
func (h *partitionHooks) waitOwning(ctx context.Context) bool {
	for !h.owning() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// admit checks a fetched message before it is held; an error stops the
// sink.
func (h *partitionHooks) admit(m Msg) error {
	if h.partitions == 0 {
		return nil
	}
	n, _, ok, err := envelope.MessagePartitions(m.Headers())
	switch {
	case err != nil:
		return fmt.Errorf("%w: message on %s: %w", ErrPartitionMismatch, m.Subject(), err)
	case !ok:
		return fmt.Errorf("%w: a message on %s has no %s header: the relay does not run with PARTITIONS", ErrPartitionMismatch, m.Subject(), envelope.HeaderPartitions)
	case n != h.partitions:
		return fmt.Errorf("%w: the relay publishes %d partitions (%s header on %s), this sink has PARTITIONS=%d; set the same value on both",
			ErrPartitionMismatch, n, envelope.HeaderPartitions, m.Subject(), h.partitions)
	}
	return nil
}

// drain waits, after consuming stopped, until every held message is
// settled, for at most drainFor; it reports whether that happened. Workers
// go on as usual meanwhile.
func (s *Sink) drain(ctx context.Context, d *dispatcher) bool {
	h := &s.part
	if h.drainFor <= 0 || h.hard.Load() || ctx.Err() == nil {
		return false
	}
	deadline := time.NewTimer(h.drainFor)
	defer deadline.Stop()
	for d.held() > 0 {
		select {
		case <-d.room:
		case <-deadline.C:
			return false
		}
	}
	return true
}

// Drained reports whether the last Run ended with every message it held
// applied and acked (Options.DrainTimeout), so that nothing it fetched is
// due for redelivery.
func (s *Sink) Drained() bool { return s.part.drained.Load() }

// confirm extends the time the sink may pull and send heartbeats.
func (h *partitionHooks) confirm(until time.Time) { h.trusted.Store(until.UnixNano()) }

// StopHard makes the next stop skip the drain and the heartbeats: the
// partition is being lost, and messages it held must become due for
// redelivery within their ack wait.
func (s *Sink) StopHard() { s.part.hard.Store(true) }

// PartitionTables are the ownership tables, quoted and qualified.
type PartitionTables struct {
	Partitions string // one row per (durable, partition): owner, epoch, how it was released
	Members    string // one row per live sink process: its lease
}

// PartitionObserver is told which partitions this process owns.
type PartitionObserver interface {
	Owned(partitions []int)
}

// PartitionedOptions configure a Partitioned consumer.
type PartitionedOptions struct {
	DB         DB // for coordination: a pool of its own, so that applying cannot starve the lease
	Tables     PartitionTables
	Durable    string // the base durable name; partition p consumes PartitionDurable(Durable, p)
	Partitions int
	Member     string // this process's member name; default host-pid-random

	// AckWait is the partition consumers' redelivery timer (ACK_WAIT): a
	// partition not released cleanly is taken over only after its owner's
	// lease plus AckWait plus Margin has passed.
	AckWait time.Duration
	Margin  time.Duration // default 2s
	Lease   time.Duration // member lease; default 6s
	Tick    time.Duration // how often the lease is renewed and the assignment looked at; default Lease/6

	// New builds the Sink of partition p with fence f (set it as
	// Options.Fence).
	New func(p int, f *Fence) (*Sink, error)
	// Settled, when set, is asked after a partition's Sink drained whether
	// the partition's consumer has nothing delivered and unacknowledged
	// (consumer info); only then is the release clean.
	Settled func(ctx context.Context, p int) bool
	// Quiet, when set, is asked after a partition was taken over without a
	// clean release how long to wait before pulling it: until the last
	// message the server delivered to the old owner is due for redelivery
	// (consumer info: its last delivery plus the ack wait), in case the old
	// owner received messages later than its lease says.
	Quiet func(ctx context.Context, p int) time.Duration

	Observer PartitionObserver
	Log      zerolog.Logger
}

// Partitioned runs the Sinks of the partitions this process owns.
type Partitioned struct {
	o PartitionedOptions

	mu    sync.Mutex
	owned map[int]*running
}

type running struct {
	p      int
	epoch  int64
	sink   *Sink
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done closes
	giving bool  // being released
}

// NewPartitioned checks the options.
func NewPartitioned(o PartitionedOptions) (*Partitioned, error) {
	if o.DB == nil || o.New == nil || o.Durable == "" || o.Tables.Partitions == "" || o.Tables.Members == "" {
		return nil, errors.New("partitioned sink: DB, New, Durable and Tables are required")
	}
	if o.Partitions < 1 || o.Partitions > envelope.MaxPartitions {
		return nil, fmt.Errorf("partitioned sink: %d partitions, expected 1 to %d", o.Partitions, envelope.MaxPartitions)
	}
	if o.Member == "" {
		o.Member = MemberName()
	}
	o.AckWait = or(o.AckWait, 30*time.Second)
	o.Margin = or(o.Margin, 2*time.Second)
	o.Lease = or(o.Lease, 6*time.Second)
	o.Tick = or(o.Tick, o.Lease/6)
	return &Partitioned{o: o, owned: map[int]*running{}}, nil
}

// MemberName is a name unique to this process: host, pid and a random
// suffix (a restarted process is a new member).
func MemberName() string {
	host, _ := os.Hostname()
	var b [3]byte
	rand.Read(b[:]) //nolint:errcheck // never fails
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// Member is this process's member name.
func (pc *Partitioned) Member() string { return pc.o.Member }

// Owned returns the partitions this process owns, in order.
func (pc *Partitioned) Owned() []int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	out := make([]int, 0, len(pc.owned))
	for p := range pc.owned {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Assign maps each partition to one of members: rendezvous hashing bounded
// by a fair share. Partitions in order each go to the member with the
// highest hash of (member, partition) that has fewer than ceil(n/len)
// partitions, so every member gets a fair share and a change of membership
// moves few partitions. Every member computes the same result from the same
// set. members must not be empty.
func Assign(members []string, n int) []string {
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	quota := (n + len(ms) - 1) / len(ms)
	count := make(map[string]int, len(ms))
	out := make([]string, n)
	for p := range n {
		best, bestScore := "", uint64(0)
		for _, m := range ms {
			if count[m] >= quota {
				continue
			}
			if sc := score(m, p); best == "" || sc > bestScore {
				best, bestScore = m, sc
			}
		}
		out[p] = best
		count[best]++
	}
	return out
}

func score(member string, p int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))                   //nolint:errcheck // never fails
	h.Write([]byte{0, byte(p >> 8), byte(p)}) //nolint:errcheck // never fails
	// FNV's last bytes barely move the high bits: mix them.
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

// Run takes part in the group until ctx ends, then hands its partitions over
// (each partition's Sink stops pulling, applies what it holds, acks, and the
// partition is released) and leaves. It returns an error when a partition's
// Sink stops for a reason other than a lost ownership (the consumer is
// missing, PARTITIONS does not match, the inbox refuses every event).
func (pc *Partitioned) Run(ctx context.Context) error {
	o := pc.o
	if err := pc.ensureRows(ctx); err != nil {
		return err
	}
	o.Log.Info().Str("member", o.Member).Int("partitions", o.Partitions).Msg("joined the partitioned group")
	t := time.NewTicker(o.Tick)
	defer t.Stop()
	var (
		leaseOK time.Time // local time until which this member's lease is trusted
		failure error
	)
	for {
		leaving := ctx.Err() != nil || failure != nil
		if err := pc.step(leaving, &leaseOK); err != nil && failure == nil {
			failure = err
			o.Log.Error().Err(err).Msg("partition stopped; handing every partition over")
			continue
		}
		if leaving && pc.empty() {
			pc.leave()
			return failure
		}
		if leaving {
			<-t.C // keep ticking while handing over: the lease must stay renewed
			continue
		}
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// step renews the lease, then brings ownership closer to the assignment.
func (pc *Partitioned) step(leaving bool, leaseOK *time.Time) error {
	o := pc.o
	ctx, cancel := context.WithTimeout(context.Background(), max(o.Lease/2, time.Second))
	defer cancel()
	if err := pc.reap(); err != nil {
		return err
	}
	start := time.Now()
	if _, err := o.DB.Exec(ctx, `INSERT INTO `+o.Tables.Members+` (durable, member, lease_until) VALUES ($1, $2, now() + $3::interval)
		ON CONFLICT (durable, member) DO UPDATE SET lease_until = EXCLUDED.lease_until`,
		o.Durable, o.Member, o.Lease.String()); err != nil {
		if !time.Now().Before(*leaseOK) {
			pc.selfFence(err)
		} else {
			o.Log.Warn().Err(err).Msg("cannot renew the member lease")
		}
		return nil
	}
	// Trusted for half the lease (local clock, measured from before the
	// renewal): the lease the others see runs longer.
	*leaseOK = start.Add(o.Lease / 2)

	members, rows, err := pc.read(ctx)
	if err != nil {
		o.Log.Warn().Err(err).Msg("cannot read partition ownership")
		return nil
	}
	var want []string
	if !leaving {
		if !slices.Contains(members, o.Member) {
			members = append(members, o.Member)
		}
		want = Assign(members, o.Partitions)
	} else if members = slices.DeleteFunc(members, func(m string) bool { return m == o.Member }); len(members) > 0 {
		want = Assign(members, o.Partitions)
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for _, r := range rows {
		mine := want != nil && want[r.partition] == o.Member && !leaving
		run := pc.owned[r.partition]
		if run != nil && r.owner == o.Member && r.epoch == run.epoch {
			run.sink.part.confirm(*leaseOK)
		}
		switch {
		case run != nil && (r.owner != o.Member || r.epoch != run.epoch):
			// Taken over: the fence already stops its commits; stop it now.
			o.Log.Warn().Int("partition", r.partition).Str("owner", r.owner).Msg("partition taken over; stopping it")
			run.sink.StopHard()
			run.cancel()
		case run != nil && !mine && !run.giving:
			run.giving = true
			o.Log.Info().Int("partition", r.partition).Bool("leaving", leaving).Msg("handing partition over")
			run.cancel()
		case run == nil && r.owner == o.Member:
			// Ours from before (its Sink stopped without a release, after
			// a self-fence): free it, not cleanly.
			pc.release(r.partition, r.epoch, false)
		case run == nil && mine && r.takeable:
			if err := pc.claim(ctx, r, *leaseOK); err != nil {
				o.Log.Warn().Err(err).Int("partition", r.partition).Msg("cannot claim partition")
			}
		}
	}
	pc.observe()
	return nil
}

// partitionRow is one partition's ownership as read.
type partitionRow struct {
	partition int
	owner     string
	epoch     int64
	takeable  bool // free to claim now
	clean     bool // released cleanly: nothing of it is waiting for redelivery
}

func (pc *Partitioned) read(ctx context.Context) (members []string, rows []partitionRow, err error) {
	o := pc.o
	ms, err := o.DB.Query(ctx, `SELECT member FROM `+o.Tables.Members+` WHERE durable = $1 AND lease_until > now()`, o.Durable)
	if err != nil {
		return nil, nil, fmt.Errorf("read members: %w", err)
	}
	members, err = pgx.CollectRows(ms, pgx.RowTo[string])
	if err != nil {
		return nil, nil, fmt.Errorf("read members: %w", err)
	}
	// A partition is free when it was released cleanly, or when its last
	// owner (its lease, or the release) is older than the ack wait plus the
	// margin; see the file comment.
	rs, err := o.DB.Query(ctx, `SELECT p.partition, p.owner, p.epoch,
			CASE WHEN p.owner = '' THEN p.clean OR p.released_at + $3::interval < now()
				ELSE greatest(m.lease_until, p.updated_at) + $3::interval < now() END,
			p.owner = '' AND p.clean
		FROM `+o.Tables.Partitions+` p LEFT JOIN `+o.Tables.Members+` m ON m.durable = p.durable AND m.member = p.owner
		WHERE p.durable = $1 AND p.partition < $2 ORDER BY p.partition`,
		o.Durable, o.Partitions, (o.AckWait + o.Margin).String())
	if err != nil {
		return nil, nil, fmt.Errorf("read partitions: %w", err)
	}
	rows, err = pgx.CollectRows(rs, func(r pgx.CollectableRow) (partitionRow, error) {
		var pr partitionRow
		err := r.Scan(&pr.partition, &pr.owner, &pr.epoch, &pr.takeable, &pr.clean)
		return pr, err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read partitions: %w", err)
	}
	return members, rows, nil
}

// claim takes r if nobody changed it since it was read, and starts its Sink.
// pc.mu is held.
func (pc *Partitioned) claim(ctx context.Context, r partitionRow, trusted time.Time) error {
	o := pc.o
	var epoch int64
	err := o.DB.QueryRow(ctx, `UPDATE `+o.Tables.Partitions+` SET owner = $3, epoch = epoch + 1, clean = false, updated_at = now()
		WHERE durable = $1 AND partition = $2 AND epoch = $4 RETURNING epoch`,
		o.Durable, r.partition, o.Member, r.epoch).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // someone else was quicker
	}
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	f := &Fence{Table: o.Tables.Partitions, Durable: o.Durable, Partition: r.partition, Owner: o.Member, Epoch: epoch}
	s, err := o.New(r.partition, f)
	if err != nil {
		// Nothing was fetched under this claim, but the last owner's
		// messages may still be waiting for redelivery: give the row back
		// as it was found, or the next owner would not wait for them.
		pc.release(r.partition, epoch, r.clean)
		return fmt.Errorf("start partition: %w", err)
	}
	s.part.confirm(trusted)
	sctx, cancel := context.WithCancel(context.Background())
	run := &running{p: r.partition, epoch: epoch, sink: s, cancel: cancel, done: make(chan struct{})}
	pc.owned[r.partition] = run
	go func() {
		defer close(run.done)
		if !r.clean && o.Quiet != nil {
			qctx, cancel := context.WithTimeout(sctx, 10*time.Second)
			wait := o.Quiet(qctx, r.partition)
			cancel()
			if wait > 0 {
				o.Log.Info().Int("partition", r.partition).Dur("wait", wait).Msg("waiting for the previous owner's messages to be due for redelivery")
				select {
				case <-sctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		run.err = s.Run(sctx)
	}()
	o.Log.Info().Int("partition", r.partition).Int64("epoch", epoch).Str("previous_owner", r.owner).Msg("partition claimed")
	return nil
}

// reap collects partitions whose Sink has stopped and releases them. It
// returns the error of a Sink that stopped for a reason other than a lost
// ownership.
func (pc *Partitioned) reap() error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var failure error
	for p, run := range pc.owned {
		select {
		case <-run.done:
		default:
			continue
		}
		delete(pc.owned, p)
		switch {
		case errors.Is(run.err, ErrFenced):
			pc.o.Log.Warn().Int("partition", p).Int64("epoch", run.epoch).Msg("partition lost to another member; its transaction rolled back")
		case run.err != nil:
			pc.release(p, run.epoch, false)
			if failure == nil {
				failure = fmt.Errorf("partition %d: %w", p, run.err)
			}
		case run.sink.part.hard.Load():
			pc.release(p, run.epoch, false)
			pc.o.Log.Info().Int("partition", p).Msg("partition stopped")
		default:
			clean := run.sink.Drained()
			if clean && pc.o.Settled != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				clean = pc.o.Settled(ctx, p)
				cancel()
			}
			pc.release(p, run.epoch, clean)
			pc.o.Log.Info().Int("partition", p).Bool("clean", clean).Msg("partition released")
		}
	}
	pc.observe()
	return failure
}

// release gives partition p up, unless it is no longer this member's.
// clean says nothing it fetched is waiting for redelivery: the next owner
// may start at once.
func (pc *Partitioned) release(p int, epoch int64, clean bool) {
	o := pc.o
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := o.DB.Exec(ctx, `UPDATE `+o.Tables.Partitions+` SET owner = '', clean = $5, released_at = now(), updated_at = now()
		WHERE durable = $1 AND partition = $2 AND owner = $3 AND epoch = $4`,
		o.Durable, p, o.Member, epoch, clean); err != nil {
		// The row keeps naming this member; its lease expiring frees it.
		o.Log.Warn().Err(err).Int("partition", p).Msg("cannot release partition; it is freed when this member's lease expires")
	}
}

// selfFence stops every partition at once: the lease could not be renewed
// in time, so another member may take the partitions over after the lease
// and the ack wait; their heartbeats must stop before that.
func (pc *Partitioned) selfFence(err error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.owned) == 0 {
		return
	}
	pc.o.Log.Error().Err(err).Int("owned", len(pc.owned)).Msg("cannot renew the member lease in time; stopping every partition")
	for _, run := range pc.owned {
		run.sink.StopHard()
		run.cancel()
	}
}

func (pc *Partitioned) empty() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return len(pc.owned) == 0
}

// observe reports the owned partitions. pc.mu is held.
func (pc *Partitioned) observe() {
	if pc.o.Observer == nil {
		return
	}
	out := make([]int, 0, len(pc.owned))
	for p := range pc.owned {
		out = append(out, p)
	}
	slices.Sort(out)
	pc.o.Observer.Owned(out)
}

// leave removes this member, so the others reassign at once.
func (pc *Partitioned) leave() {
	o := pc.o
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := o.DB.Exec(ctx, `DELETE FROM `+o.Tables.Members+` WHERE durable = $1 AND member = $2`, o.Durable, o.Member); err != nil {
		o.Log.Warn().Err(err).Msg("cannot remove the member row; it expires with its lease")
	}
	o.Log.Info().Str("member", o.Member).Msg("left the partitioned group")
}

// ensureRows creates the partition rows that are missing.
func (pc *Partitioned) ensureRows(ctx context.Context) error {
	o := pc.o
	for wait := time.Duration(250 * time.Millisecond); ; wait = min(wait*2, 5*time.Second) {
		_, err := o.DB.Exec(ctx, `INSERT INTO `+o.Tables.Partitions+` (durable, partition)
			SELECT $1, g FROM generate_series(0, $2 - 1) g ON CONFLICT DO NOTHING`, o.Durable, o.Partitions)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if _, _, ok := sqlstate.Classify(err); ok {
			return fmt.Errorf("create partition rows in %s: %w", o.Tables.Partitions, err)
		}
		o.Log.Warn().Err(err).Dur("retry_in", wait).Msg("cannot create partition rows, retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}
