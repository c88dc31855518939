package relay

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/checkpoint"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
)

// Observer is told what the relay does, for metrics. Its methods are called
// from the relay's goroutines and must not block.
type Observer interface {
	// Published: JetStream stored an event (duplicate: it already had it).
	Published(duplicate bool)
	// CommitToAck is the time from an event's commit to its ack.
	CommitToAck(time.Duration)
	// DeadLettered: a row was dead-lettered, or skipped with UseDLQ false.
	DeadLettered()
	// Retried: a publish is attempted again after a failure.
	Retried()
	// Slot reports the slot's state as last read.
	Slot(*cdc.SlotInfo)
	// SlotRecovered: the slot was recreated (reason missing, dropped or
	// lost) and rows outbox rows were published again.
	SlotRecovered(reason string, rows int64)
}

type nopObserver struct{}

func (nopObserver) Published(bool)              {}
func (nopObserver) CommitToAck(time.Duration)   {}
func (nopObserver) DeadLettered()               {}
func (nopObserver) Retried()                    {}
func (nopObserver) Slot(*cdc.SlotInfo)          {}
func (nopObserver) SlotRecovered(string, int64) {}

// Options configure a Relay. Zero durations take the defaults noted.
type Options struct {
	DB         *pgxpool.Pool // slot reads, start checks, pruning (2 connections are plenty)
	ConnString string        // DATABASE_URL, for the replication connection
	NC         *nats.Conn
	JS         jetstream.JetStream // created with publish.JetStreamOptions

	Slot        string
	Publication string
	OutboxTable string // schema.table, already validated

	Producer   string            // APP_NAME
	Subjects   envelope.Subjects // where rows go, and the DLQ
	MaxPayload int               // the connection's max payload; a larger envelope is dead-lettered
	// ObjectPayloadsOnly dead-letters array payloads (PAYLOAD_ARRAYS=deadletter):
	// consumers on the Ruby gem receive them as {}.
	ObjectPayloadsOnly bool
	// Partitions is PARTITIONS: events go to {subject}.{partition} by
	// their ordering key (see envelope.Partition); 0 keeps the subjects as
	// they are.
	Partitions int
	// Stream is the JetStream stream the relay publishes to, and
	// StreamSubjects its subjects (which subjects may go in fast batches
	// when the stream's configuration may not be read).
	Stream         string
	StreamSubjects []string
	// Manage allows JetStream management calls: reading the stream's
	// configuration, asking which stream covers a subject
	// (AUTO_PROVISION).
	Manage bool
	// Provision, when set, runs first (AUTO_PROVISION); the slot must then
	// exist only once it returned. Without it the slot must exist.
	Provision func(context.Context) error

	UseDLQ           bool
	FastBatch        bool
	MaxInflight      int
	MaxInflightBytes int
	AckTimeout       time.Duration // per publish; default 10s
	NoStreamTimeout  time.Duration // without Manage: "no responders" this long means no stream; default 30s

	StatusInterval  time.Duration // confirm interval; default 1s
	ReplTimeout     time.Duration // replication silence limit; default 30s
	ShutdownTimeout time.Duration // in-flight acks after ctx ends; default 10s
	BatchLinger     time.Duration

	SlotCheck   time.Duration // slot guard interval; default 30s
	SlotLagWarn int64         // warn above this many retained WAL bytes

	// RecoverSlot recreates a missing or lost slot and republishes what
	// the stream may lack (SLOT_RECOVERY=auto, recover.go); false stops
	// with advice instead. RecoveryMargin (default 5m) reaches back before
	// the stream's newest event, for transactions that began before it
	// and committed after.
	RecoverSlot    bool
	RecoveryMargin time.Duration

	// Fence holds each event until the synchronous standbys hold its
	// commit (SYNC_STANDBY_FENCE, fence.go); "" is auto.
	Fence FenceMode

	OutboxRetention time.Duration // 0 keeps rows
	PruneInterval   time.Duration // default 1m

	// Tracer, when set, gives every published event a span (trace.go); nil
	// is traces off, at the cost of one nil check per event.
	Tracer trace.Tracer

	Observer Observer
	Log      zerolog.Logger
}

// Relay streams the outbox to JetStream. Create it with New; Run it once.
type Relay struct {
	opts    Options
	builder envelope.Builder
	log     zerolog.Logger
	obs     Observer
	tracer  trace.Tracer // nil: traces off
	dbName  string
	tracker *checkpoint.Tracker
	stream  *cdc.Stream
	pub     atomic.Pointer[publish.Publisher] // set by Run
	refuse  *refusals
	fence   fenceState

	ackTx   *checkpoint.Tx // the transaction of the last acked event, and
	ackTime time.Time      // when its first event was acked; owned by the ack loop
}

// New returns a relay; it connects nothing (the connections are the
// caller's) but watches NC's async errors for permission violations.
func New(opts Options) *Relay {
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 10 * time.Second
	}
	if opts.NoStreamTimeout <= 0 {
		opts.NoStreamTimeout = 30 * time.Second
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if opts.SlotCheck <= 0 {
		opts.SlotCheck = 30 * time.Second
	}
	if opts.PruneInterval <= 0 {
		opts.PruneInterval = time.Minute
	}
	if opts.RecoveryMargin <= 0 {
		opts.RecoveryMargin = 5 * time.Minute
	}
	if opts.Fence == "" {
		opts.Fence = FenceAuto
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	r := &Relay{opts: opts, log: opts.Log, obs: opts.Observer, tracer: opts.Tracer}
	r.builder = envelope.Builder{Producer: opts.Producer, Subjects: opts.Subjects, MaxPayload: opts.MaxPayload, ObjectPayloadsOnly: opts.ObjectPayloadsOnly, Partitions: opts.Partitions}
	if opts.DB != nil {
		r.dbName = opts.DB.Config().ConnConfig.Database
	}
	// Until the fence has read the server's setting, auto fences.
	r.fence.active.Store(opts.Fence != FenceOff)
	r.refuse = &refusals{r: r}
	r.refuse.watch(opts.NC)
	r.tracker = checkpoint.New(0)
	var recover func(context.Context, *cdc.Recovery) error
	if opts.RecoverSlot {
		recover = r.recoverSlot
	}
	r.stream = cdc.NewStream(cdc.Options{
		Recover:        recover,
		Pending:        r.pendingRecovery,
		ConnString:     opts.ConnString,
		Slot:           opts.Slot,
		Publication:    opts.Publication,
		Table:          qualified(opts.OutboxTable),
		StatusInterval: opts.StatusInterval,
		DrainTimeout:   opts.ShutdownTimeout,
		Timeout:        opts.ReplTimeout,
		Linger:         opts.BatchLinger,
		Log:            opts.Log,
	}, r.tracker)
	return r
}

// State is the replication stream's state (readiness, metrics).
func (r *Relay) State() cdc.State { return r.stream.State() }

// Inflight is the number of publishes awaiting an ack.
func (r *Relay) Inflight() int {
	if p := r.pub.Load(); p != nil {
		return p.Inflight()
	}
	return 0
}

// Batched is the number of messages sent in fast batches.
func (r *Relay) Batched() uint64 {
	if p := r.pub.Load(); p != nil {
		return p.Batched()
	}
	return 0
}

// Lingers is the number of reads that waited BatchLinger for a burst.
func (r *Relay) Lingers() uint64 { return r.stream.Lingers() }

// Run streams until ctx ends (then drains, confirms and returns nil) or a
// fatal error occurs.
//
// Five goroutines, each with one job and one owner: the stream reads the
// slot and hands events over; the pipeline turns them into messages and
// submits them; the publisher takes the acks; the guard watches the slot;
// pruning deletes old rows. Whichever fails first, or ctx ending, stops
// them in this order.
func (r *Relay) Run(ctx context.Context) error {
	if err := r.start(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	opts := r.publishOptions()
	opts.Batch = r.batchSubjects(ctx)
	pub := publish.New(r.opts.JS, opts)
	r.pub.Store(pub)

	var failure firstError
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	// The pipeline and the publisher outlive reading: they finish what was
	// handed over while the stream drains.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	stop := func(err error) { // nil: a goroutine that ended with its context, or has nothing to do
		if err != nil {
			failure.set(err)
			stopReading()
		}
	}

	defer context.AfterFunc(ctx, func() {
		r.log.Info().Msg("shutting down: stop reading, wait for in-flight acks, confirm")
	})()
	events := make(chan *cdc.Event, 1024)
	var reading, working errgroup.Group
	reading.Go(func() error {
		// When readCtx ends, Run waits up to ShutdownTimeout for every event
		// handed over to be done (acked, dead-lettered or skipped), confirms
		// the safe position one last time, closes events and returns.
		stop(r.explain(ctx, r.stream.Run(readCtx, events)))
		return nil
	})
	reading.Go(func() error { stop(r.guard(readCtx)); return nil })
	reading.Go(func() error { stop(r.prune(readCtx)); return nil })
	toPublish := events
	if r.opts.Fence != FenceOff {
		fenced := make(chan *cdc.Event, cap(events))
		working.Go(func() error {
			if err := r.fenceLoop(workCtx, events, fenced); !errors.Is(err, context.Canceled) {
				stop(err)
			}
			return nil
		})
		toPublish = fenced
	}
	working.Go(func() error {
		if err := r.pipeline(workCtx, pub, toPublish); !errors.Is(err, context.Canceled) {
			stop(err)
		}
		return nil
	})
	working.Go(func() error { stop(pub.Run(workCtx)); return nil })

	// 1. Until ctx ends or something fails, then stop reading: the stream
	//    drains what it handed over and confirms it; the guard and pruning
	//    end.
	reading.Wait()
	// 2. Every event handed over is done, or the drain timed out: stop the
	//    pipeline and the publisher (what is still unacked is re-sent on
	//    the next start).
	stopWork()
	working.Wait()
	if err := failure.get(); err != nil {
		return err
	}
	r.log.Info().Str("confirmed_lsn", r.tracker.Safe().String()).Uint64("fast_batched", pub.Batched()).Msg("relay stopped")
	return nil
}

// firstError keeps the first failure of the relay's goroutines.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// batchSubjects tells the publisher which subjects may go out in fast
// batches: those of the stream, when it allows them. Without the stream's
// configuration (it cannot be read) every message is acked on its own.
func (r *Relay) batchSubjects(ctx context.Context) func(string) bool {
	if !r.opts.FastBatch {
		return nil
	}
	version := r.opts.NC.ConnectedServerVersion()
	if !r.opts.Manage {
		// No management calls: try the relay's own subjects; a stream that
		// does not take batches makes the publisher fall back by itself
		// (with a warning) on the first one.
		if !publish.BatchSupported(version) {
			return nil
		}
		r.log.Info().Str("stream", r.opts.Stream).Msg("publishing bursts as fast batches if the stream allows them (allow_batched)")
		return publish.BatchFilter(r.opts.StreamSubjects)
	}
	s, err := r.opts.JS.Stream(ctx, r.opts.Stream)
	if err != nil {
		r.log.Info().Err(err).Str("stream", r.opts.Stream).Msg("stream configuration unavailable: publishing with one ack per message")
		return nil
	}
	info := s.CachedInfo()
	batch := publish.BatchSubjects(info, version)
	switch {
	case batch != nil:
		r.log.Info().Str("stream", r.opts.Stream).Msg("publishing bursts as fast batches")
	case !publish.BatchSupported(version):
		r.log.Info().Str("server_version", version).Msg("nats-server before 2.14: publishing with one ack per message")
	default:
		r.log.Info().Str("stream", r.opts.Stream).
			Msg("the stream does not allow fast batches (allow_batched): publishing with one ack per message")
	}
	return batch
}

// publishOptions are the publisher's decisions shared by the live relay and
// Backfill: what is refused for good and how it is dead-lettered.
func (r *Relay) publishOptions() publish.Options {
	return publish.Options{
		MaxInflight:      r.opts.MaxInflight,
		MaxInflightBytes: r.opts.MaxInflightBytes,
		AckTimeout:       r.opts.AckTimeout,
		Rejected:         r.rejected,
		Refused:          r.refuse.refused,
		Retried:          func(*publish.Message, error) { r.obs.Retried() },
		Log:              r.log,
	}
}

func qualified(t string) string {
	for i := 0; i < len(t); i++ {
		if t[i] == '.' {
			return t
		}
	}
	return "public." + t
}
