package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Result is how a message ended, for metrics.
type Result string

const (
	ResultApplied   Result = "applied"   // the handler ran and committed
	ResultDuplicate Result = "duplicate" // already applied: acked without running the handler
	ResultRetried   Result = "retried"   // an attempt failed and will be retried (one per failed attempt)
	ResultDead      Result = "dead"      // dead-lettered (or dropped with USE_DLQ=false) and terminated
	ResultStale     Result = "stale"     // older than the key's newest applied event (SKIP_STALE)
)

// Observer is told what happens, for metrics. Calls come from several
// goroutines.
type Observer interface {
	Result(Result)
	HandlerDone(elapsed time.Duration, err error)
}

// LatencyObserver is implemented by an Observer that follows how long each
// applied event took to its ack: since it was stored in the stream (the
// message's timestamp, the NATS server's clock; negative when unknown) and
// since this process received it (waiting behind its key's earlier events
// and for a worker, retries, the transaction).
type LatencyObserver interface {
	Applied(sinceStored, sinceReceived time.Duration)
}

type nopObserver struct{}

func (nopObserver) Result(Result)                    {}
func (nopObserver) HandlerDone(time.Duration, error) {}

// Options configure a Sink. Zero values take the defaults noted.
type Options struct {
	DB      DB                  // a pool with at least Concurrency+1 connections
	JS      jetstream.JetStream // for dead-letter publishes (a publish, not an API call)
	Source  Source              // the durable consumer: JetStreamPull, RestrictedPull or Push
	Handler Handler

	Inbox      string // inbox table, schema.table; default public.jetstream_inbox_events
	DLQSubject string // where dead letters go; required when UseDLQ
	UseDLQ     bool   // false: log at error level, mark dead, terminate

	MaxDeliver int             // attempts before dead-lettering as exhausted; default 5
	Backoff    []time.Duration // wait before attempt n+1 is Backoff[n-1], the last repeating; default 1s,5s,15s,30s,60s
	BatchSize  int             // messages per fetch; default 25
	// TxBatch is how many events, of different keys, one worker may apply
	// in one transaction when their handler is a SQL procedure or function,
	// or a webhook (default 25; 1 applies every event in a transaction of
	// its own). See batch.go.
	TxBatch     int
	Concurrency int // workers (keys applied in parallel); default 4
	// MaxHeld bounds the messages pulled and not yet settled; pulling waits
	// while more are held. Default DefaultMaxHeld; at least BatchSize+Concurrency.
	// A Push source is bounded by the consumer's MaxAckPending instead.
	MaxHeld int
	// MaxHeldBytes bounds the bytes (bodies and headers) of the messages
	// pulled and not yet settled, next to MaxHeld: a pull asks the server
	// for at most the room left. A message larger than the bound is pulled
	// alone once nothing else is held. Default DefaultMaxHeldBytes; negative
	// for no byte bound. A Push source is bounded by MaxAckPending only.
	MaxHeldBytes int64
	SkipStale    bool // discard (record as stale) events older than their key's newest applied one
	// FillGaps: this process is the consumer's only reader, so a gap in its
	// delivery sequence is a lost delivery, and the missing messages are
	// read from the stream and applied first (gap.go). Pull sources only;
	// needs JS and read access to the stream.
	FillGaps bool

	// AckWait is the consumer's redelivery timer; heartbeats go out every
	// third of it. Default: for JetStreamPull the shortest of the consumer's
	// AckWait and BackOff values, else 30s.
	AckWait         time.Duration
	ShutdownTimeout time.Duration // how long in-flight handlers may finish after ctx ends; default 30s
	FetchWait       time.Duration // how long one fetch waits for messages; default 1s (the shutdown latency)

	// Tracer, when set, gives every apply of an event a span (trace.go);
	// nil is traces off.
	Tracer trace.Tracer
	// Partitioned consumption (see partition.go). Fence makes every apply
	// transaction check the partition's ownership before it commits;
	// Partitions makes a message whose Bridge-Partitions header differs
	// stop the sink (ErrPartitionMismatch); DrainTimeout makes a stop apply
	// and ack what is held, for up to that long, before handing back the
	// rest.
	Fence        *Fence
	Partitions   int
	DrainTimeout time.Duration

	Observer Observer
	Log      zerolog.Logger

	// heldProbe, when set (tests), sees the messages held and their bytes
	// after each one is added.
	heldProbe func(count int, bytes int64)
}

// Sink consumes a durable consumer and applies each message through the
// inbox. See the package documentation.
type Sink struct {
	db         DB
	js         jetstream.JetStream
	src        Source
	handler    Handler
	inbox      *inbox
	dlqSubject string
	useDLQ     bool

	maxDeliver  int
	backoff     []time.Duration
	batchSize   int
	txBatch     int
	concurrency int
	maxHeld     int
	// maxHeldBytes bounds the bytes held (pullLoop); 0 for no bound.
	maxHeldBytes int64
	skipStale    bool
	fillGaps     bool
	heartbeat    time.Duration
	shutdown     time.Duration
	fetchWait    time.Duration

	obs    Observer
	lat    LatencyObserver // obs, when it follows latencies; else nil
	tracer trace.Tracer    // nil: traces off
	log    zerolog.Logger

	// callSlots bounds the webhook calls in flight across workers to
	// Concurrency (batch.go).
	callSlots chan struct{}

	// halt stops consuming with a cause that Run returns: an inbox
	// statement failed in a way no retry mends (see fatalError).
	halt func(error)

	part partitionHooks

	// heldProbe, when set (tests), sees the messages held and their bytes
	// after each one is added.
	heldProbe func(count int, bytes int64)
}

// New checks the options and returns a Sink.
func New(o Options) (*Sink, error) {
	if o.DB == nil || o.Source == nil || o.Handler == nil {
		return nil, errors.New("sink: DB, Source and Handler are required")
	}
	if o.UseDLQ && (o.JS == nil || o.DLQSubject == "") {
		return nil, errors.New("sink: JS and DLQSubject are required with UseDLQ")
	}
	in, err := newInbox(o.Inbox)
	if err != nil {
		return nil, err
	}
	s := &Sink{
		db: o.DB, js: o.JS, src: o.Source, handler: o.Handler, inbox: in,
		dlqSubject: o.DLQSubject, useDLQ: o.UseDLQ,
		maxDeliver: or(o.MaxDeliver, 5), backoff: o.Backoff,
		batchSize: or(o.BatchSize, 25), txBatch: or(o.TxBatch, 25), concurrency: or(o.Concurrency, 4),
		skipStale: o.SkipStale, fillGaps: o.FillGaps, shutdown: or(o.ShutdownTimeout, 30*time.Second), fetchWait: or(o.FetchWait, time.Second),
		obs: o.Observer, tracer: o.Tracer, log: o.Log, heldProbe: o.heldProbe,
	}
	if len(s.backoff) == 0 {
		s.backoff = DefaultBackoff()
	}
	for _, b := range s.backoff {
		if b <= 0 {
			return nil, fmt.Errorf("sink: backoff values must be positive, got %s", b)
		}
	}
	s.maxHeld = o.MaxHeld
	if s.maxHeld <= 0 {
		s.maxHeld = DefaultMaxHeld(s.batchSize, s.concurrency, s.txBatch)
	}
	s.maxHeld = max(s.maxHeld, s.batchSize+s.concurrency)
	switch s.maxHeldBytes = o.MaxHeldBytes; {
	case s.maxHeldBytes == 0:
		s.maxHeldBytes = DefaultMaxHeldBytes
	case s.maxHeldBytes < 0:
		s.maxHeldBytes = 0
	}
	ackWait := o.AckWait
	if ackWait <= 0 {
		ackWait = or(o.Source.ackWait(), 30*time.Second)
	}
	s.heartbeat = max(ackWait/3, 10*time.Millisecond)
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	s.lat, _ = s.obs.(LatencyObserver)
	s.callSlots = make(chan struct{}, s.concurrency)
	s.part.fence, s.part.partitions, s.part.drainFor = o.Fence, o.Partitions, o.DrainTimeout
	if o.Fence != nil {
		s.db = fencedDB{DB: o.DB, f: o.Fence}
	}
	return s, nil
}

// DefaultMaxHeld is MaxHeld's default: a full batch for every worker
// (CONCURRENCY × TX_BATCH) and two fetches ahead. Workers committing
// their batches while the next are pulled is what lets the sink keep
// CONCURRENCY transactions in flight; with fewer held messages the
// workers share a few batches (docs/BENCHMARKS.md, step 4). The bytes
// held are bounded apart (MaxHeldBytes), so large events do not make
// this a memory bound.
func DefaultMaxHeld(batchSize, concurrency, txBatch int) int {
	return 2*batchSize + concurrency*max(txBatch, 1)
}

// DefaultMaxHeldBytes is MaxHeldBytes' default. Every held event costs
// a few times its size on its way to Postgres (its body, the handler's
// argument and the inbox row's payload encoded into a pipeline), so with
// events of a megabyte this keeps the process to a few hundred MB; events
// of a few kB never reach it.
const DefaultMaxHeldBytes = 32 << 20

// DefaultBackoff is BACKOFF's default.
func DefaultBackoff() []time.Duration {
	return []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second}
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// redeliveryTimer is the shortest time the server waits for an ack before
// redelivering: with BackOff set, the server uses BackOff[n-1] for delivery n
// instead of AckWait.
func redeliveryTimer(info *jetstream.ConsumerInfo) time.Duration {
	if info == nil {
		return 30 * time.Second
	}
	d := info.Config.AckWait
	for _, b := range info.Config.BackOff {
		if d <= 0 || b < d {
			d = b
		}
	}
	if d <= 0 {
		return 30 * time.Second
	}
	return d
}

// Ready reports whether messages can arrive: for a pull source, whether
// the last pull reached the consumer; for a push source, whether the
// subscription stands.
func (s *Sink) Ready() error { return s.src.ready() }

// Run consumes until ctx ends, then shuts down: it stops taking messages,
// hands back messages that were delivered but not started, lets in-flight
// handlers finish (at most ShutdownTimeout, after which their transactions
// are cancelled and their messages handed back) and returns nil. It returns
// an error only when consuming cannot go on: the consumer is gone
// (ErrConsumerMissing), the server refused the push subscription, or the
// inbox refuses every event alike (its table does not fit, the sink's role
// lacks a privilege: an error naming the SQLSTATE).
func (s *Sink) Run(ctx context.Context) error {
	// Handlers and acks run under work, which outlives ctx by at most the
	// shutdown timeout, so that in-flight events can finish.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := make(chan struct{}) // closed when shutting down: retry waits end and hand their message back
	d := newDispatcher()
	d.probe = s.heldProbe
	consumeCtx, halt := context.WithCancelCause(ctx)
	defer halt(nil)
	s.halt = halt

	var workers sync.WaitGroup
	for range s.concurrency {
		workers.Go(func() { s.work(work, stop, d) })
	}
	hbCtx, stopHeartbeat := context.WithCancel(context.Background())
	var hb sync.WaitGroup
	hb.Go(func() { s.beat(hbCtx, d) })

	err := s.src.consume(consumeCtx, s, d)
	s.part.drained.Store(s.drain(ctx, d))

	// Closing the dispatcher first makes every lane released from now on
	// come back whole (done returns its rest), so that a worker handing back
	// a waiting head hands back the events behind it in order, with it.
	back := d.close()
	close(stop)
	s.handBack(back, 0)
	s.log.Info().Int("handed_back", len(back)).Dur("timeout", s.shutdown).Msg("stopping: no new messages taken, waiting for in-flight events")
	finished := make(chan struct{})
	go func() { workers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(s.shutdown):
		s.log.Warn().Msg("shutdown timeout: cancelling in-flight handlers, their messages will be redelivered")
		cancelWork()
		<-finished
	}
	stopHeartbeat()
	hb.Wait()
	if cause := context.Cause(consumeCtx); ctx.Err() == nil && cause != nil {
		err = cause
	}
	s.log.Info().Msg("sink stopped")
	return err
}

// beat sends InProgress for every held message, so that JetStream does not
// redeliver what waits in a lane, a retry or a slow handler.
func (s *Sink) beat(ctx context.Context, d *dispatcher) {
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.part.owning() {
				d.progress()
			}
		}
	}
}

// work applies lanes' head messages until the dispatcher closes: several
// in one transaction when they can be batched, else one at a time.
func (s *Sink) work(ctx context.Context, stop <-chan struct{}, d *dispatcher) {
	var claims []claim
	for {
		claims = d.next(claims, s.txBatch, s.batchable)
		switch {
		case claims == nil:
			return
		case claims[0].it.batch > 0:
			s.applyBatch(ctx, stop, d, claims)
		default:
			s.handleClaim(ctx, stop, d, claims[0])
		}
	}
}

// handleClaim takes a lane's head to its end on its own and releases the lane.
func (s *Sink) handleClaim(ctx context.Context, stop <-chan struct{}, d *dispatcher, c claim) {
	s.applyAlone(ctx, stop, d, []claim{c})
}

// release gives a lane back once its head is settled; when the sink is
// stopping, the rest of the lane is handed back after delay.
func (s *Sink) release(d *dispatcher, c claim, delay time.Duration) {
	if rest := d.done(c.lane, c.it); len(rest) > 0 {
		s.handBack(rest, delay)
	}
}

// handBack Naks messages this process will not handle, in order, so they
// are redelivered (to any process) after delay.
func (s *Sink) handBack(items []*item, delay time.Duration) {
	for _, it := range items {
		var err error
		if delay > 0 {
			err = it.msg.NakWithDelay(delay)
		} else {
			err = it.msg.Nak()
		}
		if err != nil {
			s.event(s.log.Warn(), it).Err(err).Msg("cannot hand message back; it is redelivered after the ack wait")
		}
	}
}

// tries is one message's attempts in this worker.
type tries struct {
	c         claim
	local     int           // attempts of this message counted here
	infraWait time.Duration // grows while the machinery keeps failing
	due       time.Time     // when the next attempt may start; zero: at once
	dead      *deadCopy     // dead-lettering decided, its copy not stored yet
	dlqWait   time.Duration // grows while the DLQ publish keeps failing
	first     error         // the outcome of an attempt made in a batch (applyCalls), judged as the first
}

// deadCopy is a decision to dead-letter, kept while its copy cannot be
// stored.
type deadCopy struct {
	class, reason string
	attempts      int
}

// dead dead-letters t's message. When the copy cannot be stored (the DLQ
// stream is unreachable, refuses the publish, is missing), the message stays
// held and its lane with it: later events of its key wait, as they do behind
// a retry, and heartbeats keep them all from being redelivered. The publish
// is tried again, without running the handler again, after a wait that
// doubles up to the last BACKOFF value, for as long as it takes; when the
// sink stops first, the message and the rest of its lane are handed back in
// order. Other keys go on in the other workers; only when every worker holds
// a key whose dead letter cannot be stored does the sink stop applying,
// which is what the order of those keys requires.
func (s *Sink) dead(ctx context.Context, d *dispatcher, t *tries, dc deadCopy) (end bool, back, delay time.Duration) {
	var err error
	if s.tracer != nil {
		sctx, span := s.startDeadLetter(ctx, t.c.it, dc.class)
		err = s.deadLetter(sctx, d, t.c.it, dc.class, dc.reason, dc.attempts)
		endDeadLetter(span, dc.reason, err)
	} else {
		err = s.deadLetter(ctx, d, t.c.it, dc.class, dc.reason, dc.attempts)
	}
	if err == nil {
		t.dead = nil
		return true, 0, 0
	}
	t.dead = &dc
	ceiling := s.backoff[len(s.backoff)-1]
	if t.dlqWait == 0 {
		t.dlqWait = min(250*time.Millisecond, ceiling)
	}
	delay = t.dlqWait
	t.dlqWait = min(delay*2, ceiling)
	s.event(s.log.Error(), t.c.it).Err(err).Str("class", dc.class).Dur("retry_in", delay).
		Msg("cannot publish dead letter; holding the message, and later events of its key, to try again")
	return false, 0, delay
}

// applyAlone takes each claim's head to its end, each event in a
// transaction of its own, and releases each lane once its head is settled:
// acked (applied, duplicate, stale), dead-lettered and terminated, or handed
// back. Every event gets its first attempt at once; an event whose attempt
// fails waits for its retry while the others go on, so that after a batch
// rolled back, its healthy events are applied promptly and only the failing
// one waits out BACKOFF. When the sink stops during a wait, every message
// still held is handed back with what was left of its wait, which the rest
// of its lane gets too, so that they do not overtake it.
func (s *Sink) applyAlone(ctx context.Context, stop <-chan struct{}, d *dispatcher, claims []claim) {
	var one [1]tries // the common case, a single event, without an allocation
	pend := one[:0]
	if len(claims) > 1 {
		pend = make([]tries, 0, len(claims))
	}
	for _, c := range claims {
		pend = append(pend, tries{c: c, infraWait: 250 * time.Millisecond})
	}
	s.applyPending(ctx, stop, d, pend)
}

// applyPending is applyAlone for messages whose tries have begun.
func (s *Sink) applyPending(ctx context.Context, stop <-chan struct{}, d *dispatcher, pend []tries) {
	for len(pend) > 0 {
		next := 0
		for i := range pend {
			if pend[i].due.Before(pend[next].due) {
				next = i
			}
		}
		t := &pend[next]
		if wait := time.Until(t.due); !t.due.IsZero() && wait > 0 {
			if _, stopped := s.sleep(ctx, stop, wait); stopped {
				for i := range pend {
					s.handBackHeld(d, &pend[i])
				}
				return
			}
		}
		end, back, delay := s.try(ctx, d, t)
		if !end {
			t.due = time.Now().Add(delay)
			continue
		}
		s.release(d, t.c, back)
		pend = append(pend[:next], pend[next+1:]...)
	}
}

// handBackHeld hands a waiting message back with what is left of its wait
// and releases its lane.
func (s *Sink) handBackHeld(d *dispatcher, t *tries) {
	left := max(time.Until(t.due), 0)
	d.finish(t.c.it)
	if err := t.c.it.msg.NakWithDelay(left); err != nil {
		s.event(s.log.Warn(), t.c.it).Err(err).Msg("cannot hand message back; it is redelivered after the ack wait")
	}
	s.release(d, t.c, left)
}

// try makes one attempt of t's message. end reports that the message is
// settled, with back the delay it was handed back with (0 when acked or
// terminated); otherwise the next attempt may start after delay.
func (s *Sink) try(ctx context.Context, d *dispatcher, t *tries) (end bool, back, delay time.Duration) {
	it := t.c.it
	if t.dead != nil { // decided before; only its copy is missing
		return s.dead(ctx, d, t, *t.dead)
	}
	if it.poison != nil {
		return s.dead(ctx, d, t, deadCopy{envelope.ClassPoison, it.poison.Error(), it.delivered})
	}
	prior := max(it.delivered-1, t.local)
	var (
		out outcome
		err error
	)
	switch {
	case t.first != nil: // attempted in a batch; judged here as any attempt
		err, t.first = t.first, nil
	case s.tracer != nil:
		actx, span := s.startApply(ctx, it, prior+1, 1)
		out, err = s.attempt(actx, it, prior)
		endApply(span, out, err)
	default:
		out, err = s.attempt(ctx, it, prior)
	}
	if err == nil {
		s.settle(d, it, out)
		return true, 0, 0
	}
	var (
		pe   *poisonError
		ee   *exhaustedError
		fe   *fatalError
		he   *handlerError
		perm *PermanentError
	)
	switch {
	case errors.Is(err, ErrFenced):
		s.stopOn(d, it, &fatalError{err})
		return true, 0, 0
	case errors.As(err, &pe):
		return s.dead(ctx, d, t, deadCopy{envelope.ClassPoison, pe.reason, it.delivered})
	case errors.As(err, &ee):
		return s.dead(ctx, d, t, deadCopy{envelope.ClassExhausted, ee.Error(), ee.attempts})
	case errors.As(err, &fe):
		s.stopOn(d, it, fe)
		return true, 0, 0
	case errors.As(err, &he) && errors.Is(he.err, ErrNoRoute):
		// Unroutable is poison (SPEC guarantee 6): no handler can ever take it.
		return s.dead(ctx, d, t, deadCopy{envelope.ClassPoison, ErrNoRoute.Error(), prior + 1})
	case errors.As(err, &he) && errors.As(he.err, &perm):
		return s.dead(ctx, d, t, deadCopy{envelope.ClassHandler, perm.Reason, prior + 1})
	case errors.As(err, &he):
		n, ok, rerr := s.recordFailure(ctx, it, prior+1, he.Error())
		switch {
		case rerr != nil:
			s.event(s.log.Warn(), it).Err(rerr).Msg("cannot record the failed attempt; counting it here")
			n = prior + 1
		case !ok:
			// Applied meanwhile by another process: the next attempt finds it.
			return false, 0, 0
		}
		t.local = n
		if n >= s.maxDeliver {
			return s.dead(ctx, d, t, deadCopy{envelope.ClassExhausted, he.Error(), n})
		}
		delay = s.backoff[min(n, len(s.backoff))-1]
		s.obs.Result(ResultRetried)
		s.event(s.log.Warn(), it).Err(he.err).Int("attempt", n).Int("max_deliver", s.maxDeliver).
			Dur("retry_in", delay).Msg("handler failed, retrying")
		return false, 0, delay
	default:
		delay = t.infraWait
		t.infraWait = min(t.infraWait*2, s.backoff[len(s.backoff)-1])
		if ctx.Err() == nil {
			s.event(s.log.Warn(), it).Err(err).Dur("retry_in", delay).Msg("cannot apply event, retrying")
		}
		return false, 0, delay
	}
}

// stopOn stops the sink because an inbox statement failed in a way every
// event would: the consumer stops, every message held is handed back, and
// Run returns the error.
func (s *Sink) stopOn(d *dispatcher, it *item, fe *fatalError) {
	s.halt(fe)
	s.handBack(d.close(), 0)
	d.finish(it)
	if err := it.msg.Nak(); err != nil {
		s.event(s.log.Warn(), it).Err(err).Msg("cannot hand message back; it is redelivered after the ack wait")
	}
}

// sleep waits for delay unless the sink stops first; then it reports what
// was left of the delay.
func (s *Sink) sleep(ctx context.Context, stop <-chan struct{}, delay time.Duration) (left time.Duration, stopped bool) {
	deadline := time.Now().Add(delay)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return 0, false
	case <-stop:
	case <-ctx.Done():
	}
	return max(time.Until(deadline), 0), true
}

// settle acks (or for a message dead-lettered before, terminates) a message
// whose outcome is committed.
func (s *Sink) settle(d *dispatcher, it *item, out outcome) {
	d.finish(it)
	// A plain ack: the worker does not wait a round trip for the server's
	// confirmation before taking the next message of its lane. If the ack
	// is lost, the redelivery finds the inbox row and is acked as a
	// duplicate, without a second effect.
	var err error
	if out == outDeadSeen {
		err = it.msg.Term()
	} else {
		err = it.msg.Ack()
	}
	if err != nil {
		s.event(s.log.Warn(), it).Err(err).Msg("ack failed; the redelivery will be recognised as a duplicate")
	}
	switch out {
	case outApplied:
		s.obs.Result(ResultApplied)
		if s.lat != nil {
			now := time.Now()
			stored := time.Duration(-1)
			if !it.stored.IsZero() {
				stored = max(now.Sub(it.stored), 0) // a server clock ahead of ours
			}
			s.lat.Applied(stored, now.Sub(it.received))
		}
		if e := s.log.Debug(); e.Enabled() {
			s.event(e, it).Int("deliveries", it.delivered).Msg("applied")
		}
	case outStale:
		s.obs.Result(ResultStale)
		s.event(s.log.Info(), it).Str("position", it.pos.String()).Msg("stale event skipped: its key has a newer one applied")
	default:
		s.obs.Result(ResultDuplicate)
		if e := s.log.Debug(); e.Enabled() {
			s.event(e, it).Msg("duplicate acked without running the handler")
		}
	}
}

// event adds the fields every per-event log line carries.
func (s *Sink) event(e *zerolog.Event, it *item) *zerolog.Event {
	return e.Str("event_id", it.eventID()).Str("subject", it.msg.Subject()).Uint64("stream_seq", it.seq)
}
