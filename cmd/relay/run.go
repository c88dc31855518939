package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/checkpoint"
	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func (m *Main) run(ctx context.Context, args []string) error {
	if err := m.Flags("run", args, nil); err != nil {
		return err
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	r, err := newRelay(ctx, c, config.NewLogger(&c.Common, m.Stderr, "relay"))
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Run(ctx)
}

// Relay wires the replication stream, the envelope builder, the publisher and
// the checkpoint tracker together.
type Relay struct {
	cfg     *Config
	log     zerolog.Logger
	pool    *pgxpool.Pool
	nc      *nats.Conn
	js      jetstream.JetStream
	tracker *checkpoint.Tracker
	stream  *cdc.Stream
	pub     *publish.Publisher
	builder envelope.Builder
	metrics *metrics
	dbName  string
	refuse  *refusals

	lsnText lsnText // owned by the pipeline goroutine

	ackTx   *checkpoint.Tx // the transaction of the last acked event, and
	ackTime time.Time      // when its first event was acked; owned by the ack loop
}

// lsnText formats commit LSNs, keeping the last one: the events of a
// transaction arrive one after the other and share it.
type lsnText struct {
	lsn  pglogrepl.LSN
	text string
}

func (c *lsnText) format(lsn pglogrepl.LSN) string {
	if c.text == "" || lsn != c.lsn {
		c.lsn, c.text = lsn, cdc.FormatLSN(lsn)
	}
	return c.text
}

func newRelay(ctx context.Context, c *Config, log zerolog.Logger) (*Relay, error) {
	log.Info().Str("database", config.Redact(c.DatabaseURL)).Strs("nats", config.RedactNATSURLs(c.NATSURLs)).
		Str("slot", c.Slot()).Str("table", c.OutboxTable).Str("stream", c.StreamName).
		Bool("auto_provision", c.AutoProvision).Str("version", config.ReadBuild().String()).Msg("starting relay")
	pcfg, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = 2
	pcfg.ConnConfig.RuntimeParams["application_name"] = "jetstream-bridge-relay"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	nc, err := config.ConnectNATS(ctx, &c.Common, "jetstream-bridge-relay "+c.AppName, log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	js, err := jetstream.New(nc, publish.JetStreamOptions(c.MaxInflight, ackTimeout)...)
	if err != nil {
		nc.Close()
		pool.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	r := &Relay{cfg: c, log: log, pool: pool, nc: nc, js: js, dbName: pcfg.ConnConfig.Database}
	r.builder = envelope.Builder{Producer: c.AppName, Subjects: c.Subjects(), MaxPayload: int(nc.MaxPayload()), ObjectPayloadsOnly: c.ObjectPayloadsOnly()}
	r.refuse = &refusals{r: r}
	r.refuse.watch(nc)
	r.metrics = newMetrics(ops.NewRegistry(), r)
	return r, nil
}

// Close releases connections. Safe to call more than once.
func (r *Relay) Close() {
	if r.nc != nil {
		r.nc.Close()
	}
	if r.pool != nil {
		r.pool.Close()
	}
}

// Run streams until ctx ends (then drains, confirms and returns nil) or a
// fatal error occurs.
func (r *Relay) Run(ctx context.Context) error {
	c := r.cfg
	if c.AutoProvision {
		if err := r.provisionWithRetry(ctx); err != nil {
			return err
		}
	}
	if err := r.checkSlot(ctx, !c.AutoProvision); err != nil {
		return err
	}
	if err := r.preflight(ctx); err != nil {
		return err
	}

	r.tracker = checkpoint.New(0)
	r.stream = cdc.NewStream(cdc.Options{
		ConnString:     c.DatabaseURL,
		Slot:           c.Slot(),
		Publication:    c.Publication,
		Table:          qualified(c.OutboxTable),
		StatusInterval: c.StatusInterval,
		DrainTimeout:   c.ShutdownTimeout,
		Timeout:        c.ReplTimeout,
		Linger:         c.BatchLinger,
		Log:            r.log,
	}, r.tracker)
	opts := r.publishOptions()
	opts.Batch, opts.Acked = r.batchSubjects(ctx), r.acked
	r.pub = publish.New(r.js, opts)
	reg := ops.NewRegistry()
	r.metrics = newMetrics(reg, r)
	srv := &ops.Server{Addr: c.HTTPAddr, Pprof: c.Pprof, Registry: reg, Log: r.log, Checks: map[string]ops.Check{
		"replication": func(context.Context) error {
			if st := r.stream.State(); !st.Replicating {
				return errors.New(st.Reason)
			}
			return nil
		},
		"nats": func(context.Context) error {
			if s := r.nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("nats %s", s)
			}
			return nil
		},
	}}

	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()

	events := make(chan *cdc.Event, 1024)
	streamDone := make(chan error, 1)
	pipeDone := make(chan error, 1)
	pubDone := make(chan error, 1)
	auxDone := make(chan error, 3)
	var helpers sync.WaitGroup // publisher and auxiliaries: none outlives Run
	go func() { streamDone <- r.stream.Run(readCtx, events) }()
	go func() { pipeDone <- r.pipeline(workCtx, events) }()
	helpers.Go(func() { pubDone <- r.pub.Run(workCtx) })
	for _, aux := range []func(context.Context) error{srv.Run, r.guard, r.prune} {
		helpers.Go(func() {
			if err := aux(readCtx); err != nil { // nil means disabled or stopped
				auxDone <- err
			}
		})
	}

	var err error
	streamFinished, pipeFinished := false, false
	select {
	case <-ctx.Done():
		r.log.Info().Msg("shutting down: stop reading, wait for in-flight acks, confirm")
	case err = <-streamDone:
		streamFinished = true
		err = r.explain(ctx, err)
	case err = <-pubDone:
	case err = <-pipeDone:
		pipeFinished = true
	case err = <-auxDone:
	}
	stopReading()
	if !streamFinished {
		if serr := <-streamDone; err == nil {
			err = r.explain(ctx, serr)
		}
	}
	stopWork()
	if !pipeFinished {
		if perr := <-pipeDone; err == nil && perr != nil && !errors.Is(perr, context.Canceled) {
			err = perr
		}
	}
	helpers.Wait()
	if err != nil {
		return err
	}
	r.log.Info().Str("confirmed_lsn", r.tracker.Safe().String()).Uint64("fast_batched", r.pub.Batched()).Msg("relay stopped")
	return nil
}

// explain turns an invalidated-slot error from the stream into the full
// recovery message.
func (r *Relay) explain(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55000" {
		if info, rerr := cdc.ReadSlot(ctx, r.pool, r.cfg.Slot()); rerr == nil && info != nil {
			if cerr := cdc.CheckSlot(info, ""); cerr != nil {
				return cerr
			}
		}
	}
	return err
}

func qualified(t string) string {
	if strings.Contains(t, ".") {
		return t
	}
	return "public." + t
}

// pipeline turns events into messages and submits them in order.
func (r *Relay) pipeline(ctx context.Context, events <-chan *cdc.Event) error {
	for ev := range events {
		m := r.message(ev)
		if m == nil {
			continue
		}
		m.Ahead = len(events) // a burst of ready events may share a fast batch
		if err := r.pub.Publish(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// batchSubjects tells the publisher which subjects may go out in fast
// batches: those of the stream, when it allows them. Without the stream's
// configuration (it cannot be read) every message is acked on its own.
func (r *Relay) batchSubjects(ctx context.Context) func(string) bool {
	if !r.cfg.FastBatch {
		return nil
	}
	version := r.nc.ConnectedServerVersion()
	if !r.cfg.AutoProvision {
		// No management calls: try the relay's own subjects; a stream that
		// does not take batches makes the publisher fall back by itself
		// (with a warning) on the first one.
		if !publish.BatchSupported(version) {
			return nil
		}
		r.log.Info().Str("stream", r.cfg.StreamName).Msg("publishing bursts as fast batches if the stream allows them (allow_batched)")
		return publish.BatchFilter(r.streamSpec().Subjects)
	}
	s, err := r.js.Stream(ctx, r.cfg.StreamName)
	if err != nil {
		r.log.Info().Err(err).Str("stream", r.cfg.StreamName).Msg("stream configuration unavailable: publishing with one ack per message")
		return nil
	}
	info := s.CachedInfo()
	batch := publish.BatchSubjects(info, version)
	switch {
	case batch != nil:
		r.log.Info().Str("stream", r.cfg.StreamName).Msg("publishing bursts as fast batches")
	case !publish.BatchSupported(version):
		r.log.Info().Str("server_version", version).Msg("nats-server before 2.14: publishing with one ack per message")
	default:
		r.log.Info().Str("stream", r.cfg.StreamName).
			Msg("the stream does not allow fast batches (allow_batched): publishing with one ack per message")
	}
	return batch
}

func (r *Relay) message(ev *cdc.Event) *publish.Message {
	if ev.Err == nil {
		o := outgoingPool.Get().(*outgoing)
		err := r.builder.BuildInto(&o.env, &ev.Row, envelope.Position{CommitLSN: r.lsnText.format(ev.CommitLSN), TxIndex: ev.Index})
		if err == nil {
			o.ev = ev
			o.pub = publish.Message{Subject: o.env.Subject, Body: o.env.Body, Header: o.env.Header, MsgID: o.env.MsgID, Ref: o}
			return &o.pub
		}
		putOutgoing(o)
		ev.Err = err
	}
	return r.rowDeadLetter(ev)
}

// outgoing is the message built for an event, with its body and header
// storage. Once JetStream has acknowledged it, nothing refers to it any more
// (the NATS client copied it when it was sent), and it goes back to
// outgoingPool for the next event: at full speed the relay then allocates
// about half as many bytes per event, and the garbage collector runs half as
// often.
type outgoing struct {
	pub publish.Message // Ref is the outgoing itself
	env envelope.Message
	ev  *cdc.Event
}

var outgoingPool = sync.Pool{New: func() any { return new(outgoing) }}

// maxPooledBody is the largest body whose storage goes back to the pool; the
// rare larger one is left to the garbage collector.
const maxPooledBody = 16 << 10

// eventOf returns the event m was published for: m is the event's message
// or the dead letter that replaced it.
func eventOf(m *publish.Message) *cdc.Event {
	if o, ok := m.Ref.(*outgoing); ok {
		return o.ev
	}
	return m.Ref.(*cdc.Event)
}

// recycle returns m's storage to the pool once it is acknowledged, if m is
// an outgoing message itself (a dead letter that replaced one may share its
// body).
func recycle(m *publish.Message) {
	if o, ok := m.Ref.(*outgoing); ok && &o.pub == m {
		putOutgoing(o)
	}
}

// putOutgoing empties o and pools it, unless its body is oversized.
func putOutgoing(o *outgoing) {
	if cap(o.env.Body) > maxPooledBody {
		return
	}
	o.pub, o.ev = publish.Message{}, nil
	outgoingPool.Put(o)
}

// rowDeadLetter builds the DLQ message for an event whose row cannot be
// published as asked, or accounts for it when USE_DLQ=false.
func (r *Relay) rowDeadLetter(ev *cdc.Event) *publish.Message {
	m := r.rowDeadLetterFor(&ev.Row, ev.Err)
	if m == nil {
		ev.Tx.Done()
		return nil
	}
	m.Header.Set(envelope.HeaderCommitLSN, r.lsnText.format(ev.CommitLSN))
	m.Header.Set(envelope.HeaderTxIndex, strconv.Itoa(ev.Index))
	if m.MsgID == "" {
		m.MsgID = envelope.DLQPrefix + "relay-" + r.lsnText.format(ev.CommitLSN) + "-" + strconv.Itoa(ev.Index)
		m.Header.Set(envelope.HeaderMsgID, m.MsgID)
	}
	m.Ref = ev
	return m
}

// rowDeadLetterFor builds the dead letter of a row. Its body is the raw row,
// so nothing of it is lost. It returns nil when USE_DLQ=false (logged).
func (r *Relay) rowDeadLetterFor(row *envelope.Row, cause error) *publish.Message {
	intended := row.Subject
	if intended == "" {
		intended = r.builder.Subjects.Publish(row.Destination)
	}
	if !r.cfg.UseDLQ {
		r.log.Error().Err(cause).Str("event_id", row.EventID).Str("subject", intended).
			Msg("row cannot be published and USE_DLQ=false: skipped (the row stays in the outbox table)")
		if r.metrics != nil {
			r.metrics.deadLetters.Inc()
		}
		return nil
	}
	r.log.Warn().Err(cause).Str("event_id", row.EventID).Str("subject", intended).Msg("dead-lettering outbox row")
	body, _ := json.Marshal(rawRow{
		EventID: row.EventID, ResourceType: row.ResourceType, ResourceID: row.ResourceID, EventType: row.EventType,
		Payload: jsonOrString(row.Payload), Headers: jsonOrString(row.Headers), Subject: row.Subject,
		Destination: row.Destination, TraceID: row.TraceID, OccurredAt: row.OccurredAt, Producer: r.cfg.AppName,
	})
	orig := nats.Header{envelope.HeaderContentType: []string{envelope.ContentTypeJSON}}
	if row.EventID != "" {
		orig.Set(envelope.HeaderMsgID, row.EventID)
	}
	h := envelope.DLQHeader(orig, envelope.ClassRelay, cause.Error(), intended, 0, time.Now())
	return &publish.Message{Subject: r.builder.Subjects.DLQ(), Body: body, Header: h, MsgID: h.Get(envelope.HeaderMsgID)}
}

type rawRow struct {
	EventID      string          `json:"event_id"`
	ResourceType string          `json:"resource_type"`
	ResourceID   string          `json:"resource_id"`
	EventType    string          `json:"event_type"`
	Payload      json.RawMessage `json:"payload"`
	Headers      json.RawMessage `json:"headers"`
	Subject      string          `json:"subject"`
	Destination  string          `json:"destination"`
	TraceID      string          `json:"trace_id"`
	OccurredAt   string          `json:"occurred_at"`
	Producer     string          `json:"producer"`
}

func jsonOrString(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return b
	}
	s, _ := json.Marshal(string(b))
	return s
}

// acked runs in the publisher's ack loop, in submission order.
func (r *Relay) acked(m *publish.Message, ack *jetstream.PubAck) {
	ev := eventOf(m)
	ev.Tx.Done()
	if m.Header.Get(envelope.HeaderErrorClass) != "" {
		r.metrics.deadLetters.Inc()
		return
	}
	r.metrics.published.Inc()
	if ack.Duplicate {
		r.metrics.duplicates.Inc()
	}
	if !ev.CommitTime.IsZero() {
		// The events of a transaction are acked one after the other: one
		// clock reading serves them all.
		if ev.Tx != r.ackTx {
			r.ackTx, r.ackTime = ev.Tx, time.Now()
		}
		r.metrics.latency.Observe(r.ackTime.Sub(ev.CommitTime).Seconds())
	}
	recycle(m)
}

// rejected builds the dead letter for a message JetStream refuses for good.
func (r *Relay) rejected(m *publish.Message, cause error) (*publish.Message, error) {
	ev := eventOf(m)
	if !r.cfg.UseDLQ {
		r.log.Error().Err(cause).Str("event_id", ev.Row.EventID).Str("subject", m.Subject).
			Msg("JetStream refused the event and USE_DLQ=false: skipped (the row stays in the outbox table)")
		r.metrics.deadLetters.Inc()
		if ev.Tx != nil { // nil in backfill
			ev.Tx.Done()
		}
		return nil, nil
	}
	r.log.Warn().Err(cause).Str("event_id", ev.Row.EventID).Str("subject", m.Subject).Msg("JetStream refused the event, dead-lettering it")
	body := m.Body
	var apiErr *jetstream.APIError
	if errors.Is(cause, nats.ErrMaxPayload) || (errors.As(cause, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum) {
		// The copy would be refused too: keep the identity, the row keeps the payload.
		body, _ = json.Marshal(map[string]any{"event_id": ev.Row.EventID, "event_type": ev.Row.EventType,
			"resource_type": ev.Row.ResourceType, "resource_id": ev.Row.ResourceID, "producer": r.cfg.AppName,
			"payload_omitted": true, "size": len(m.Body)})
	}
	h := envelope.DLQHeader(m.Header, envelope.ClassRelay, cause.Error(), m.Subject, 0, time.Now())
	return &publish.Message{Subject: r.builder.Subjects.DLQ(), Body: body, Header: h, MsgID: h.Get(envelope.HeaderMsgID)}, nil
}

// publishOptions are the publisher's decisions shared by the live relay and
// `relay backfill`: what is refused for good and how it is dead-lettered.
func (r *Relay) publishOptions() publish.Options {
	return publish.Options{
		MaxInflight:      r.cfg.MaxInflight,
		MaxInflightBytes: r.cfg.MaxInflightBytes,
		AckTimeout:       ackTimeout,
		Rejected:         r.rejected,
		Refused:          r.refuse.refused,
		Retried:          func(*publish.Message, error) { r.metrics.retries.Inc() },
		Log:              r.log,
	}
}

// checkSlot verifies the slot at start.
func (r *Relay) checkSlot(ctx context.Context, mustExist bool) error {
	for backoff := 250 * time.Millisecond; ; backoff = min(backoff*2, 10*time.Second) {
		info, err := cdc.ReadSlot(ctx, r.pool, r.cfg.Slot())
		if err == nil {
			if info == nil {
				if mustExist {
					return fmt.Errorf("%w: %q; run `relay provision` with admin credentials or set AUTO_PROVISION=true", cdc.ErrSlotMissing, r.cfg.Slot())
				}
				return nil
			}
			r.metrics0(info)
			return cdc.CheckSlot(info, r.dbName)
		}
		if isFatal(err) {
			return err
		}
		r.log.Warn().Err(err).Dur("retry_in", backoff).Msg("cannot read replication slot, retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}

// preflight refuses to run where nothing would ever be streamed: a server
// without logical decoding, or a publication that does not carry the outbox's
// inserts.
func (r *Relay) preflight(ctx context.Context) error {
	var walLevel string
	if err := r.pool.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return fmt.Errorf("postgres has wal_level=%s: set wal_level = logical in postgresql.conf and restart Postgres", walLevel)
	}
	schema, table := migrations.SplitQualified(r.cfg.OutboxTable)
	var exists, covers, inserts bool
	err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
		EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3),
		coalesce((SELECT pubinsert FROM pg_publication WHERE pubname = $1), false)`,
		r.cfg.Publication, schema, table).Scan(&exists, &covers, &inserts)
	switch {
	case err != nil:
		return fmt.Errorf("read publication %s: %w", r.cfg.Publication, err)
	case !exists:
		return fmt.Errorf("publication %q does not exist; run `relay provision` or create it: CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')",
			r.cfg.Publication, r.cfg.Publication, r.cfg.OutboxTable)
	case !covers:
		return fmt.Errorf("publication %q does not include %s: ALTER PUBLICATION %s ADD TABLE %s",
			r.cfg.Publication, r.cfg.OutboxTable, r.cfg.Publication, r.cfg.OutboxTable)
	case !inserts:
		return fmt.Errorf("publication %q does not publish inserts: ALTER PUBLICATION %s SET (publish = 'insert')",
			r.cfg.Publication, r.cfg.Publication)
	}
	return nil
}

func (r *Relay) metrics0(info *cdc.SlotInfo) {
	if r.metrics != nil {
		r.metrics.slotLag.Set(float64(info.LagBytes))
		r.metrics.slotRetained.Set(float64(info.RetainedBytes))
		r.metrics.setWALStatus(info.WALStatus)
	}
}

// guard watches the slot: lost stops the relay; reserve trouble and lag warn.
func (r *Relay) guard(ctx context.Context) error {
	t := time.NewTicker(r.cfg.SlotCheck)
	defer t.Stop()
	lastStatus := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		info, err := cdc.ReadSlot(ctx, r.pool, r.cfg.Slot())
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn().Err(err).Msg("slot check failed")
			}
			continue
		}
		if info == nil {
			r.log.Error().Str("slot", r.cfg.Slot()).Msg("replication slot no longer exists")
			continue
		}
		r.metrics0(info)
		if info.WALStatus == "lost" {
			return cdc.CheckSlot(info, "")
		}
		if info.WALStatus != lastStatus && (info.WALStatus == "unreserved" || info.WALStatus == "extended") {
			r.log.Warn().Str("slot", info.Name).Str("wal_status", info.WALStatus).Any("safe_wal_size", info.SafeWALSize).
				Msg("replication slot WAL reserve is at risk; the relay is behind or stalled")
		}
		lastStatus = info.WALStatus
		if info.RetainedBytes > r.cfg.SlotLagWarn {
			r.log.Warn().Str("slot", info.Name).Int64("retained_wal_bytes", info.RetainedBytes).Int64("lag_bytes", info.LagBytes).
				Msg("replication slot retains a lot of WAL")
		}
	}
}

// prune deletes outbox rows older than OUTBOX_RETENTION in small batches,
// but only rows whose events the slot has confirmed: the rows are the only
// copy `relay backfill` can recover from after a lost slot, so a row whose
// transaction the slot may still have to stream is never deleted.
//
// A row does not record its transaction's commit position, so the bound is
// taken in two steps (a mark, then a delete once the slot passed it):
//
//  1. Mark: read X0, the oldest transaction id still running (the xmin of a
//     fresh snapshot), then L0, the WAL insert position. A transaction whose
//     id precedes X0 had ended when the snapshot was taken; if it committed,
//     its commit record was written before it became visible, so before L0.
//     A subtransaction's id follows its parent's, so this holds for rows
//     inserted in subtransactions too.
//  2. Delete: once the slot's confirmed_flush_lsn is at or past L0, every
//     transaction that committed before L0 has been streamed and its events
//     acknowledged by JetStream (the relay never confirms past an unacked
//     publish). So every visible row whose xmin precedes X0 is published:
//     those older than the retention go.
//
// Transaction ids have no order operator; age() measures both from the same
// point, so age(xmin) > age(X0) means xmin precedes X0. A row frozen so long
// ago that its raw xmin has wrapped compares as newer and is kept: the error
// is always on the safe side.
//
// Only the relay that holds the slot and streams prunes (a standby knows
// nothing of the slot's progress), and only while the slot exists with its
// WAL reserved: a lost or missing slot means rows may have to be backfilled.
// Any of those resets the mark. A long-running transaction anywhere in the
// cluster holds X0 back, which delays pruning but never makes it unsafe.
// Rows committed before the slot existed are never streamed; they are
// pruned like the others once older than the retention, so backfill them
// before enabling it (the relay warns about them at start).
func (r *Relay) prune(ctx context.Context) error {
	if r.cfg.OutboxRetention <= 0 {
		return nil
	}
	table, _ := migrations.QuoteQualified(r.cfg.OutboxTable) // validated at start
	t := time.NewTicker(r.cfg.PruneInterval)
	defer t.Stop()
	var mark *pruneMark
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var err error
		mark, err = r.pruneStep(ctx, table, mark)
		if err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("outbox prune failed")
		}
	}
}

// pruneMark is a point after which every transaction older than xmin is
// known to have committed (or aborted) before lsn.
type pruneMark struct {
	xmin string // a 32-bit transaction id, as text
	lsn  pglogrepl.LSN
}

// pruneStep deletes what mark allows once the slot has passed it, and
// returns the mark to wait for next.
func (r *Relay) pruneStep(ctx context.Context, table string, mark *pruneMark) (*pruneMark, error) {
	skip := func(reason string) (*pruneMark, error) {
		r.log.Debug().Str("reason", reason).Msg("outbox prune skipped")
		return nil, nil
	}
	if !r.stream.State().Replicating {
		return skip("this relay does not hold the slot")
	}
	info, err := cdc.ReadSlot(ctx, r.pool, r.cfg.Slot())
	switch {
	case err != nil:
		return nil, fmt.Errorf("read slot: %w", err)
	case info == nil:
		return skip("slot missing")
	case info.WALStatus != "reserved" && info.WALStatus != "extended":
		return skip("slot wal_status " + info.WALStatus)
	}
	if mark != nil {
		if info.ConfirmedLSN < mark.lsn {
			r.log.Debug().Str("confirmed_lsn", info.ConfirmedLSN.String()).Str("waiting_for", mark.lsn.String()).
				Msg("outbox prune waits for the slot to confirm")
			return mark, nil
		}
		total := int64(0)
		for ctx.Err() == nil {
			tag, err := r.pool.Exec(ctx, `DELETE FROM `+table+` WHERE id IN (SELECT id FROM `+table+
				` WHERE occurred_at < now() - make_interval(secs => $1) AND age(xmin) > age($2::text::xid) ORDER BY id LIMIT 1000)`,
				r.cfg.OutboxRetention.Seconds(), mark.xmin)
			if err != nil {
				return mark, fmt.Errorf("delete outbox rows: %w", err)
			}
			total += tag.RowsAffected()
			if tag.RowsAffected() < 1000 {
				break
			}
		}
		if total > 0 {
			r.log.Info().Int64("rows", total).Dur("retention", r.cfg.OutboxRetention).Str("confirmed_lsn", info.ConfirmedLSN.String()).
				Msg("pruned outbox")
		}
	}
	// In this order: the snapshot first, then the WAL position.
	next := &pruneMark{}
	if err := r.pool.QueryRow(ctx, `SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296)::text`).
		Scan(&next.xmin); err != nil {
		return nil, fmt.Errorf("read oldest running transaction: %w", err)
	}
	var lsn string
	if err := r.pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return nil, fmt.Errorf("read wal position: %w", err)
	}
	if next.lsn, err = pglogrepl.ParseLSN(lsn); err != nil {
		return nil, fmt.Errorf("read wal position: %w", err)
	}
	return next, nil
}

func isFatal(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code[:2] == "28" || pgErr.Code == "3D000" || pgErr.Code == "42501"
	}
	var uerr *url.Error
	return errors.As(err, &uerr)
}
