package cdc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
	"github.com/jetstream-bridge/jetstream-bridge/internal/checkpoint"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Event is one committed outbox event: an insert into the outbox table, or a
// logical decoding message with the outbox prefix (see message).
type Event struct {
	Row        envelope.Row
	CommitLSN  pglogrepl.LSN // LSN of the transaction's commit record
	Index      int           // 0-based position among the transaction's outbox events (rows and messages)
	CommitTime time.Time
	Err        error // the row or message could not be decoded into outbox fields (dead-letter it)
	Message    bool  // carried by a logical decoding message (message mode): no outbox row holds it

	tx *checkpoint.Tx // its transaction, which waits for Done
}

// Tx identifies the event's transaction: the events of one transaction
// share it, in order.
func (ev *Event) Tx() *checkpoint.Tx { return ev.tx }

// Done tells the checkpoint that the event is finished with: acknowledged
// by JetStream, dead-lettered, or skipped on purpose. Whoever holds the
// event calls it once: the stream until it has handed the event over, then
// the receiver.
func (ev *Event) Done() { ev.tx.Done() }

// Options configure a Stream.
type Options struct {
	ConnString  string // DATABASE_URL
	Slot        string
	Publication string
	Table       string // schema.table of the outbox
	// MessagePrefix is the prefix of the logical decoding messages that
	// carry outbox events (jetstream_publish in message mode); default the
	// publication's name, which is what the helper uses, so that each
	// outbox's relay takes only its own. Other prefixes are skipped.
	MessagePrefix  string
	StatusInterval time.Duration // how often to confirm; default 1s
	DrainTimeout   time.Duration // on shutdown, how long to wait for in-flight events before the last confirm; default 10s
	Timeout        time.Duration // a connection silent this long despite requests is dead; default 30s
	Linger         time.Duration // under load, wait this long for more before reading again; 0 = never (see linger.go)
	// Recover, when set, recreates a missing or lost slot (see Recovery);
	// without it a missing or lost slot stops the stream.
	Recover func(context.Context, *Recovery) error
	// Pending, with Recover, is asked before every START_REPLICATION
	// whether a recovery is under way elsewhere or was interrupted (the
	// slot record says so): then the session goes through Recover, which
	// waits for the other relay's to finish, instead of streaming from a
	// slot whose backfill is not done. It returns the reason, or "".
	Pending func(context.Context) (string, error)
	Log     zerolog.Logger
}

// State is what /readyz and the logs report about the stream.
type State struct {
	Replicating bool
	Standby     bool
	Reason      string // why not replicating
	Confirmed   pglogrepl.LSN
	Since       time.Time
	Host        string // the database server of the replication connection, as host:port
}

// Stream reads the replication slot. Create it with NewStream and call Run once.
type Stream struct {
	opts    Options
	tracker *checkpoint.Tracker
	log     zerolog.Logger

	schema, table string

	mu    sync.Mutex
	state State
	// recovery is the reason the next session must recover the slot first
	// ("" none); set by RequestRecovery and by Run. Owned by Run's goroutine
	// once it started.
	recovery       string
	replicatedHost string // the server a session of this stream last streamed from

	lingers atomic.Uint64
}

// readAheadSize is the replication connection's read-ahead buffer.
const readAheadSize = 64 << 10

// ErrSlotMissing means the replication slot does not exist (dropped under a
// running relay, or never provisioned with AUTO_PROVISION=false).
var ErrSlotMissing = errors.New("replication slot does not exist")

// NewStream returns a stream that confirms positions from tracker.
func NewStream(opts Options, tracker *checkpoint.Tracker) *Stream {
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MessagePrefix == "" {
		opts.MessagePrefix = opts.Publication
	}
	s := &Stream{opts: opts, tracker: tracker, log: opts.Log}
	s.schema, s.table, _ = strings.Cut(opts.Table, ".")
	s.state = State{Reason: "starting", Since: time.Now()}
	return s
}

// Lingers is how many reads waited Options.Linger for a burst.
func (s *Stream) Lingers() uint64 { return s.lingers.Load() }

// State returns the current state.
func (s *Stream) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *Stream) setState(st State) {
	s.mu.Lock()
	prev := s.state
	st.Confirmed, st.Host = prev.Confirmed, prev.Host
	if prev.Replicating != st.Replicating || prev.Standby != st.Standby || prev.Reason != st.Reason {
		st.Since = time.Now()
	} else {
		st.Since = prev.Since
	}
	s.state = st
	s.mu.Unlock()
}

func (s *Stream) setConfirmed(lsn pglogrepl.LSN) {
	s.mu.Lock()
	s.state.Confirmed = lsn
	s.mu.Unlock()
}

// RequestRecovery makes the first session recover the slot (Recovery)
// before it streams: the relay found it missing or lost at start. Call it
// before Run.
func (s *Stream) RequestRecovery(reason string) { s.recovery = reason }

// setHost records the server the replication connection reached, and says
// so when it changed: a multi-host DATABASE_URL followed a failover.
func (s *Stream) setHost(host string) {
	s.mu.Lock()
	prev := s.state.Host
	s.state.Host = host
	s.mu.Unlock()
	switch {
	case prev == "":
		s.log.Info().Str("db_host", host).Msg("replication connected")
	case prev != host:
		s.log.Warn().Str("db_host", host).Str("previous_db_host", prev).Msg("database host changed: replicating from another server")
	}
}

// Run reads until ctx ends or a fatal error occurs, sending events to out in
// commit order, and closes out when it returns. Connection failures are
// retried with capped exponential backoff. When ctx ends it stops reading,
// waits up to DrainTimeout for every handed-over event to be done, confirms
// the safe position and returns nil.
func (s *Stream) Run(ctx context.Context, out chan<- *Event) error {
	defer close(out)
	retry := backoff.New(250*time.Millisecond, 10*time.Second)
	for {
		started := time.Now()
		err := s.session(ctx, out)
		if ctx.Err() != nil {
			s.setState(State{Reason: "stopped"})
			return nil
		}
		var busy *slotBusyError
		switch {
		case errors.As(err, &busy):
			st := s.State()
			if !st.Standby || st.Reason != busy.Error() {
				s.log.Info().Str("slot", s.opts.Slot).Int("active_pid", busy.pid).
					Msg("slot is held by another relay, waiting as hot standby")
			}
			s.setState(State{Standby: true, Reason: busy.Error()})
			retry.Reset()
			sleep(ctx, time.Second)
			continue
		case s.opts.Recover != nil && (errors.Is(err, ErrSlotMissing) || errors.Is(err, ErrSlotLost)):
			// The slot went away under a running relay (dropped, or
			// invalidated and its walsender terminated), or this is a
			// promoted standby that never had it: recover on the next
			// session, at once.
			s.recovery = "lost"
			if errors.Is(err, ErrSlotMissing) {
				// Missing where it streamed before: dropped. Missing on
				// another server: a promoted standby that never had it.
				s.recovery = "missing"
				if s.replicatedHost != "" && s.replicatedHost == s.State().Host {
					s.recovery = "dropped"
				}
			}
			s.setState(State{Reason: err.Error()})
			s.log.Warn().Err(err).Str("reason", s.recovery).Dur("retry_in", retry.Delay()).Msg("replication slot gone, recovering it")
			// Not at once: should the slot look healthy to the recovery and
			// still fail here, this must not spin.
			retry.Wait(ctx)
			continue
		case errors.Is(err, ErrSlotMissing), errors.Is(err, ErrProtocol), isFatalPgError(err):
			s.setState(State{Reason: err.Error()})
			return err
		}
		if time.Since(started) > 30*time.Second {
			retry.Reset()
		}
		s.setState(State{Reason: "replication connection lost: " + err.Error()})
		s.log.Warn().Err(err).Dur("retry_in", retry.Delay()).Str("slot", s.opts.Slot).Msg("replication stream interrupted, reconnecting")
		retry.Wait(ctx)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type slotBusyError struct {
	slot string
	pid  int
}

func (e *slotBusyError) Error() string {
	return fmt.Sprintf("replication slot %q is active for pid %d", e.slot, e.pid)
}

// isFatalPgError reports errors that reconnecting cannot fix.
func isFatalPgError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "28000", "28P01", // invalid authorization, bad password
		"42501",          // insufficient privilege (no REPLICATION attribute)
		"3D000",          // database does not exist
		"55000",          // object not in prerequisite state (e.g. wal_level, slot invalidated)
		"42704", "22023": // undefined object (publication), invalid parameter
		return true
	}
	return false
}

// ReplicationConfig parses connString for a replication connection.
func ReplicationConfig(connString, appName string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	cfg.RuntimeParams["application_name"] = appName
	// pgoutput renders values with the walsender's settings: fix them so
	// timestamptz text is always ISO in UTC.
	cfg.RuntimeParams["DateStyle"] = "ISO, YMD"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cfg.RuntimeParams["IntervalStyle"] = "iso_8601"
	return cfg, nil
}

// session runs one replication connection.
func (s *Stream) session(ctx context.Context, out chan<- *Event) (err error) {
	cfg, err := ReplicationConfig(s.opts.ConnString, "jetstream-bridge-relay")
	if err != nil {
		return err
	}
	// Postgres sends each change as its own small message; a backlog arrives
	// faster than one read of pgconn's 8 kB buffer per system call can take
	// it. A larger read-ahead buffer takes whatever has arrived in one read.
	var readAhead *bufio.Reader
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		readAhead = bufio.NewReaderSize(r, readAheadSize)
		return pgproto3.NewFrontend(readAhead, w)
	}
	connectCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := pgconn.ConnectConfig(connectCtx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("connect for replication: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn.Close(cctx)
		cancel()
	}()
	s.setHost(conn.Conn().RemoteAddr().String())

	if s.recovery == "" && s.opts.Recover != nil && s.opts.Pending != nil {
		if s.recovery, err = s.opts.Pending(ctx); err != nil {
			return err
		}
	}
	if s.recovery != "" {
		if err := s.recover(ctx, conn); err != nil {
			return err
		}
	}
	start := s.tracker.Safe()
	err = pglogrepl.StartReplication(ctx, conn, s.opts.Slot, start, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '1'",
			"publication_names '" + s.opts.Publication + "'",
			// Outbox events may come as logical decoding messages
			// (Postgres 14+); those of other prefixes are skipped.
			"messages 'true'",
		},
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			switch {
			case pgErr.Code == "55006": // object_in_use: another walsender holds the slot
				return &slotBusyError{slot: s.opts.Slot, pid: activePID(ctx, conn, s.opts.Slot)}
			case pgErr.Code == "42704" && strings.Contains(pgErr.Message, "replication slot"):
				return fmt.Errorf("%w: %q (create it with `relay provision` or AUTO_PROVISION=true)", ErrSlotMissing, s.opts.Slot)
			case pgErr.Code == "55000" && strings.Contains(pgErr.Detail, "invalidated") && s.opts.Recover != nil:
				// "cannot read from logical replication slot" (15), "can no
				// longer get changes from replication slot" (16+), with a
				// detail saying why it was invalidated.
				return fmt.Errorf("%w: %q: %w", ErrSlotLost, s.opts.Slot, err)
			}
		}
		return fmt.Errorf("start replication on slot %q: %w", s.opts.Slot, err)
	}
	s.log.Info().Str("slot", s.opts.Slot).Str("from_lsn", start.String()).Msg("replicating")
	s.setState(State{Replicating: true})
	s.replicatedHost = s.State().Host

	r := reader{s: s, conn: conn, readAhead: readAhead, out: out, rels: map[uint32]*relation{}}
	defer func() {
		if r.tx != nil { // connection lost inside a transaction: Postgres re-sends it whole
			r.tx.Abandon()
			r.tx = nil
		}
	}()
	return r.loop(ctx)
}

func activePID(ctx context.Context, conn *pgconn.PgConn, slot string) int {
	res := conn.ExecParams(ctx, "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1",
		[][]byte{[]byte(slot)}, nil, nil, nil).Read()
	if res.Err != nil || len(res.Rows) == 0 {
		return 0
	}
	var pid int
	fmt.Sscan(string(res.Rows[0][0]), &pid)
	return pid
}

// reader is the state of one session's receive loop.
type reader struct {
	s         *Stream
	conn      *pgconn.PgConn
	readAhead *bufio.Reader // below the connection's own read buffer
	out       chan<- *Event
	rels      map[uint32]*relation

	tx         *checkpoint.Tx // open transaction, nil between transactions
	commitLSN  pglogrepl.LSN
	commitTime time.Time
	index      int
	walEnd     pglogrepl.LSN // server WAL end from the latest keepalive
	nextStatus time.Time
	lastSent   pglogrepl.LSN
	lastHeard  time.Time // when the server last sent anything (or we last stopped reading)
	unclocked  int       // messages received since the clock was last read
	clockDue   bool      // a read timed out (the status is due): read the clock
	linger     *linger
}

// The server only pings a client that has not reported for half of
// wal_sender_timeout, and ours reports every StatusInterval. So when it has
// been quiet for a sixth of Options.Timeout the status update asks for a
// reply, and after Options.Timeout of silence the connection is taken for dead
// (a network partition would otherwise go unnoticed until TCP gives up, many
// minutes later).

func (r *reader) loop(ctx context.Context) error {
	r.nextStatus = time.Now().Add(r.s.opts.StatusInterval)
	r.lastHeard = time.Now()
	// Reads wake up for the next status update through the socket's read
	// deadline, set once per interval, and for shutdown through one hook per
	// session: a context with a deadline per message costs a timer, a
	// context watch and ~10 allocations per WAL message (3 messages per
	// 1-row transaction).
	netConn := r.conn.Conn()
	stopHook := context.AfterFunc(ctx, func() { netConn.SetReadDeadline(time.Now()) })
	defer stopHook()
	r.linger = newLinger(r.s.opts.Linger, netConn, &r.s.lingers)
	var deadline time.Time
	for {
		if ctx.Err() != nil {
			return r.shutdown()
		}
		// The clock (for the silence limit, the status and the linger) is
		// read before each read from the socket, and every 64 messages while
		// a backlog streams in through the read buffer: a clock read per
		// change would cost more than decoding it. Messages received since
		// the last reading count as heard now.
		buffered := r.conn.Frontend().ReadBufferLen() > 0 || r.readAhead.Buffered() > 0
		var now time.Time
		if !buffered || r.unclocked >= 64 || r.clockDue {
			now, r.clockDue = time.Now(), false
			if r.unclocked > 0 {
				r.lastHeard, r.unclocked = now, 0
			}
			if silent := now.Sub(r.lastHeard); silent > r.s.opts.Timeout {
				return fmt.Errorf("no message from the server for %s despite requests", silent.Round(time.Second))
			}
			if !now.Before(r.nextStatus) {
				if err := r.sendStatus(false); err != nil {
					return err
				}
			}
		}
		if !deadline.Equal(r.nextStatus) {
			deadline = r.nextStatus
			if err := netConn.SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("set read deadline: %w", err)
			}
			if ctx.Err() != nil { // the hook may have fired before the new deadline
				continue
			}
		}
		if !buffered && r.linger.wait(now) && ctx.Err() != nil {
			continue
		}
		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) || ctx.Err() != nil {
				r.clockDue = true // a partial message may still be buffered
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		r.unclocked++
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.copyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(msg)
		case *pgproto3.CopyDone:
			return errors.New("server ended the replication stream")
		}
	}
}

func (r *reader) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if pkm.ServerWALEnd > r.walEnd {
			r.walEnd = pkm.ServerWALEnd
		}
		if pkm.ReplyRequested {
			return r.sendStatus(false)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		return r.walData(ctx, xld.WALData)
	}
	return nil
}

func (r *reader) walData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeBegin:
		var m pglogrepl.BeginMessage
		if err := m.Decode(data[1:]); err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if r.tx != nil {
			return fmt.Errorf("%w: begin inside an open transaction", ErrProtocol)
		}
		r.tx = r.s.tracker.Begin()
		r.commitLSN, r.commitTime, r.index = m.FinalLSN, m.CommitTime, 0
	case pglogrepl.MessageTypeCommit:
		var m pglogrepl.CommitMessage
		if err := m.Decode(data[1:]); err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if r.tx == nil {
			return fmt.Errorf("%w: commit without begin", ErrProtocol)
		}
		r.tx.Commit(m.TransactionEndLSN)
		r.tx = nil
		r.linger.committed()
	case pglogrepl.MessageTypeRelation:
		var m pglogrepl.RelationMessage
		if err := m.Decode(data[1:]); err != nil {
			return fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		rel := newRelation(&m, r.s.schema, r.s.table)
		if rel.outbox {
			if miss := rel.missing(); len(miss) > 0 {
				r.s.log.Error().Strs("missing_columns", miss).Str("table", r.s.opts.Table).
					Msg("outbox table lacks required columns; its rows will be dead-lettered")
			}
		}
		r.rels[m.RelationID] = rel
	case pglogrepl.MessageTypeInsert:
		if r.tx == nil {
			return fmt.Errorf("%w: insert outside a transaction", ErrProtocol)
		}
		ev := &Event{CommitLSN: r.commitLSN, CommitTime: r.commitTime, Index: r.index}
		_, rel, err := decodeInsert(data[1:], r.rels, &ev.Row)
		if err != nil {
			return err
		}
		if !rel.outbox {
			return nil
		}
		if miss := rel.missing(); len(miss) > 0 {
			ev.Err = fmt.Errorf("outbox table %s.%s lacks columns %v", rel.namespace, rel.name, miss)
		}
		r.index++
		ev.tx = r.tx
		r.tx.Add()
		return r.emit(ctx, ev)
	case pglogrepl.MessageTypeMessage:
		m, err := decodeMessage(data[1:])
		if err != nil {
			return err
		}
		if string(m.prefix) != r.s.opts.MessagePrefix {
			return nil
		}
		return r.message(ctx, &m)
	}
	// Update, Delete, Truncate, Type and Origin are not relayed.
	return nil
}

// message turns a logical decoding message with the outbox prefix into an
// event. A transactional one is part of its transaction like a row: it takes
// the next index and is delivered at the commit, never after a rollback.
//
// A non-transactional one is dead-lettered, never published: Postgres sends
// it at once, whether or not the transaction that wrote it commits, so it may
// carry work that was rolled back. It arrives between transactions (the
// transactions around it are sent whole at their commits) and is registered
// as a transaction of its own, ending at its record's end: once it is
// dead-lettered, confirming that position skips only it, since every
// transaction still to come commits after it and is sent again from there.
func (r *reader) message(ctx context.Context, m *logicalMessage) error {
	ev := &Event{Message: true}
	if err := envelope.DecodeRowJSON(m.content, &ev.Row); err != nil {
		// The content goes to the dead letter as the payload, so nothing of
		// it is lost.
		ev.Row = envelope.Row{Payload: append([]byte(nil), m.content...)}
		ev.Err = fmt.Errorf("logical decoding message at %s: %w", m.lsn, err)
	}
	if !m.transactional {
		ev.Err = fmt.Errorf("logical decoding message at %s with prefix %q is not transactional: "+
			"it is sent even when its transaction rolls back, so it is not published (emit it with pg_logical_emit_message(true, ...))",
			m.lsn, r.s.opts.MessagePrefix)
		if r.tx == nil {
			tx := r.s.tracker.Begin()
			tx.Add()
			tx.Commit(m.lsn)
			ev.CommitLSN, ev.tx = m.lsn, tx
			return r.emit(ctx, ev)
		}
		// Not expected inside a transaction's changes; if it is, it rides
		// with that transaction, which confirms no further than its commit.
	} else if r.tx == nil {
		return fmt.Errorf("%w: transactional message outside a transaction", ErrProtocol)
	}
	ev.CommitLSN, ev.CommitTime, ev.Index = r.commitLSN, r.commitTime, r.index
	r.index++
	ev.tx = r.tx
	r.tx.Add()
	return r.emit(ctx, ev)
}

// emit hands ev to the publisher. While the publisher has no room it keeps
// confirming on schedule so Postgres does not time the connection out.
func (r *reader) emit(ctx context.Context, ev *Event) error {
	select {
	case r.out <- ev:
		return nil
	default:
	}
	// Time spent waiting here is not the server's silence.
	defer func() { r.lastHeard = time.Now() }()
	for {
		wait := time.Until(r.nextStatus)
		t := time.NewTimer(max(wait, 0))
		select {
		case r.out <- ev:
			t.Stop()
			return nil
		case <-t.C:
			if err := r.sendStatus(false); err != nil {
				return err
			}
		case <-ctx.Done():
			t.Stop()
			// Not handed over: it will be re-sent after restart. Count it done so
			// the tracker can drain what was handed over.
			ev.Done()
			return nil
		}
	}
}

// sendStatus confirms the safe position. Between transactions with nothing in
// flight it first moves the safe position to the server's WAL end (so an idle
// outbox never pins WAL) and asks the server for a fresh keepalive.
func (r *reader) sendStatus(final bool) error {
	idle := r.tx == nil && r.walEnd > 0 && r.s.tracker.Skip(r.walEnd)
	pos := r.s.tracker.Safe()
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos,
		WALFlushPosition: pos,
		WALApplyPosition: pos,
		ReplyRequested:   !final && (idle || time.Since(r.lastHeard) > r.s.opts.Timeout/6),
	})
	r.nextStatus = time.Now().Add(r.s.opts.StatusInterval)
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	if pos != r.lastSent {
		r.s.log.Debug().Str("lsn", pos.String()).Msg("confirmed")
		r.lastSent = pos
	}
	r.s.setConfirmed(pos)
	return nil
}

// shutdown waits for in-flight events (bounded) and confirms one last time.
func (r *reader) shutdown() error {
	if r.tx != nil { // never committed here: Postgres sends it again
		r.tx.Abandon()
		r.tx = nil
	}
	deadline := time.Now().Add(r.s.opts.DrainTimeout)
	for !r.s.tracker.Idle() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !r.s.tracker.Idle() {
		r.s.log.Warn().Int("open_transactions", r.s.tracker.Open()).
			Msg("stopping with unacknowledged events; they will be re-sent on the next start")
	}
	if err := r.sendStatus(true); err != nil {
		return err
	}
	r.s.log.Info().Str("lsn", r.s.tracker.Safe().String()).Msg("final position confirmed")
	return nil
}
