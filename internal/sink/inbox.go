package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sqlstate"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Inbox statuses (the status column).
const (
	StatusReceived   = "received"
	StatusProcessing = "processing"
	StatusProcessed  = "processed"
	StatusFailed     = "failed"
	StatusDead       = "dead"
	StatusStale      = "stale"
)

// inbox holds the statements on the inbox table and its positions table,
// rendered once for the configured name.
type inbox struct {
	table                                                                  string // quoted
	upsert, setApplying, position, processed, stale, failed, dead, freeSeq string
	// For batches (batch.go): statements that fail unless the event is new
	// and, with SKIP_STALE, the newest of its key.
	insertNew, positionNewest string
	// unclaim deletes a row written by insertNew in the same transaction,
	// for a webhook call that failed (batch.go).
	unclaim string
}

func newInbox(table string) (*inbox, error) {
	if table == "" {
		table = migrations.DefaultInbox
	}
	tbl, err := migrations.QuoteQualified(table)
	if err != nil {
		return nil, fmt.Errorf("inbox table: %w", err)
	}
	pos, err := migrations.QuoteQualified(table + "_positions")
	if err != nil {
		return nil, fmt.Errorf("inbox positions table: %w", err)
	}
	const cols = `(event_id, event_type, resource_type, resource_id, payload, subject, headers,
		stream, stream_seq, deliveries, commit_lsn, tx_index, status, error_message, processing_attempts, failed_at)`
	const vals = `($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb, $8, $9, $10, $11::pg_lsn, $12`
	const newCols = `(event_id, event_type, resource_type, resource_id, payload, subject, headers,
			stream, stream_seq, deliveries, commit_lsn, tx_index, status, processing_attempts, processed_at)`
	const newVals = vals + `, 'processed', 1, now())`
	// Positions are compared only within one producer: LSNs of two
	// databases say nothing about each other's order.
	position := `INSERT INTO ` + pos + ` AS p (resource_type, resource_id, producer, commit_lsn, tx_index, event_id)
			VALUES ($1, $2, $6, $3::pg_lsn, $4, $5)
			ON CONFLICT (resource_type, resource_id, producer) DO UPDATE
				SET commit_lsn = EXCLUDED.commit_lsn, tx_index = EXCLUDED.tx_index, event_id = EXCLUDED.event_id, updated_at = now()
				WHERE (p.commit_lsn, p.tx_index) <= (EXCLUDED.commit_lsn, EXCLUDED.tx_index)
			RETURNING true`
	return &inbox{
		table: tbl,
		// Insert the row, or lock the existing one. A new row goes in as
		// processed at once: if the handler fails, the transaction rolls back
		// and the row with it, so the common path writes the row once and
		// needs no second statement. RETURNING reports whether the row is new
		// (xmax = 0) and what a previous delivery left: its status, attempts
		// and last error, and whether it was this very message (same stream
		// sequence) — a dead row is final for its own message but is tried
		// again when the event comes back in a new message (a replay or a
		// re-publish).
		upsert: `INSERT INTO ` + tbl + ` AS i ` + newCols + ` VALUES ` + newVals + `
			ON CONFLICT (event_id) DO UPDATE SET deliveries = greatest(i.deliveries, EXCLUDED.deliveries)
			RETURNING i.xmax = 0, i.status, i.processing_attempts, coalesce(i.error_message, ''),
				coalesce(i.stream = $8 AND i.stream_seq = $9, false)`,
		setApplying: `SELECT set_config('jetstream_bridge.applying', $1, true)`,
		// Lock the key's newest applied position (of this event's producer)
		// and move it to this event's,
		// unless this event is older: then no row comes back (stale). The
		// conflicting row is locked even when the WHERE fails, and stays
		// locked until commit, so one key's events apply one at a time across
		// processes.
		position: position,
		// A batch has no round trip to look at results before it commits, so
		// what would send an event down another path makes its statement
		// fail instead, and the event is applied on its own: an existing row
		// (a duplicate, a retry, a dead letter) is a unique violation, an
		// older position divides by zero (no row came back).
		insertNew:      `INSERT INTO ` + tbl + ` ` + newCols + ` VALUES ` + newVals,
		positionNewest: `WITH p AS (` + position + `) SELECT 1 / count(*) FROM p`,
		unclaim:        `DELETE FROM ` + tbl + ` WHERE event_id = $1`,
		processed: `UPDATE ` + tbl + ` SET status = 'processed', processed_at = now(), updated_at = now(),
				processing_attempts = CASE WHEN status = 'dead' THEN 0 ELSE processing_attempts END + 1,
				stream = $2, stream_seq = $3, deliveries = $4, commit_lsn = $5::pg_lsn, tx_index = $6
			WHERE event_id = $1`,
		// $7: the row was inserted by this attempt (as processed, with one
		// attempt counted); a stale event never ran the handler.
		stale: `UPDATE ` + tbl + ` SET status = 'stale', processed_at = now(), updated_at = now(),
				stream = $2, stream_seq = $3, deliveries = $4, commit_lsn = $5::pg_lsn, tx_index = $6,
				processing_attempts = CASE WHEN $7 THEN 0 ELSE processing_attempts END
			WHERE event_id = $1`,
		// A failed attempt, recorded in its own transaction after the
		// attempt rolled back. $14 is the attempt number as the caller
		// counts it (server deliveries included); the stored count never goes
		// down. Nothing is returned when the event was applied meanwhile.
		failed: `INSERT INTO ` + tbl + ` AS i ` + cols + ` VALUES ` + vals + `, 'failed', $13, $14, now())
			ON CONFLICT (event_id) DO UPDATE SET status = 'failed', error_message = EXCLUDED.error_message,
				processing_attempts = greatest(CASE WHEN i.status = 'dead' THEN 0 ELSE i.processing_attempts END + 1,
					EXCLUDED.processing_attempts),
				failed_at = now(), updated_at = now(), deliveries = greatest(i.deliveries, EXCLUDED.deliveries)
				WHERE i.status NOT IN ('processed', 'stale')
			RETURNING processing_attempts`,
		// Dead-lettered: the row remembers which message (stream sequence) was.
		dead: `INSERT INTO ` + tbl + ` AS i ` + cols + ` VALUES ` + vals + `, 'dead', $13, $14, now())
			ON CONFLICT (event_id) DO UPDATE SET status = 'dead', error_message = EXCLUDED.error_message,
				processing_attempts = greatest(i.processing_attempts, EXCLUDED.processing_attempts),
				stream = EXCLUDED.stream, stream_seq = EXCLUDED.stream_seq,
				failed_at = now(), updated_at = now(), deliveries = greatest(i.deliveries, EXCLUDED.deliveries)
				WHERE i.status NOT IN ('processed', 'stale')`,
		freeSeq: `UPDATE ` + tbl + ` SET stream_seq = NULL WHERE stream = $1 AND stream_seq = $2 AND event_id <> $3`,
	}, nil
}

// Bounds on the envelope fields the inbox keys on, in bytes. Postgres
// refuses a btree entry over about 2700 bytes (a third of a page), and the
// inbox indexes event_id, the positions table (resource_type, resource_id);
// the bounds keep every key well under that, so an event is refused for
// its size, with a reason, before any statement runs. event_type is
// bounded like a subject (it is one token of one).
const (
	MaxEventIDLen      = 1024
	MaxEventTypeLen    = envelope.MaxSubjectLen
	MaxResourceTypeLen = 255
	MaxResourceIDLen   = 1024
)

// parseEnvelope parses body and checks that the inbox can store it: a
// field over its bound makes the message poison.
func parseEnvelope(body []byte) (*envelope.Envelope, error) {
	env, err := envelope.ParseShared(body)
	if err != nil {
		return nil, err
	}
	for _, f := range [...]struct {
		name, v string
		max     int
	}{
		{"event_id", env.EventID, MaxEventIDLen},
		{"event_type", env.EventType, MaxEventTypeLen},
		{"resource_type", env.ResourceType, MaxResourceTypeLen},
		{"resource_id", env.ResourceID, MaxResourceIDLen},
	} {
		if len(f.v) > f.max {
			return nil, fmt.Errorf("%w: %s is %d bytes, over the inbox's %d-byte limit", envelope.ErrInvalid, f.name, len(f.v), f.max)
		}
	}
	return env, nil
}

// outcome is how an attempt ended without error.
type outcome int

const (
	outApplied   outcome = iota + 1 // handler ran, committed
	outDuplicate                    // already processed (or stale): not run again
	outStale                        // older than the key's newest applied event: recorded, not run
	outDeadSeen                     // this message was dead-lettered before: terminate it again
)

// Error classes of an attempt. The handler's own errors come back as
// *PermanentError or as plain errors (retry); everything else the attempt can
// fail with is one of these.
type (
	// infraError: the bridge's own machinery failed (database unreachable,
	// connection lost, commit outcome unknown, shutting down), or Postgres
	// rolled the transaction back for what ran beside it. Not an attempt
	// of the handler: retried without counting.
	infraError struct{ err error }
	// poisonError: the event can never be stored or processed. err is the
	// Postgres error, when one said so.
	poisonError struct {
		reason string
		err    error
	}
	// exhaustedError: the attempts were used up before this one started
	// (earlier deliveries failed or died with the process).
	exhaustedError struct {
		attempts int
		last     string
	}
	// handlerError: the handler failed, or the commit of its writes did;
	// retry unless permanent.
	handlerError struct{ err error }
	// fatalError: an inbox statement failed in a way that every event
	// would (the table does not fit the statements, a privilege is
	// missing, Postgres failed internally, a SQLSTATE nobody expects). No
	// retry mends it and dead-lettering would only move healthy events
	// aside, so the sink stops and says why.
	fatalError struct{ err error }
)

func (e *infraError) Error() string   { return e.err.Error() }
func (e *infraError) Unwrap() error   { return e.err }
func (e *poisonError) Error() string  { return e.reason }
func (e *poisonError) Unwrap() error  { return e.err }
func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }
func (e *fatalError) Error() string   { return e.err.Error() }
func (e *fatalError) Unwrap() error   { return e.err }
func (e *exhaustedError) Error() string {
	if e.last == "" {
		return "delivered " + strconv.Itoa(e.attempts) + " times without being applied"
	}
	return e.last
}

// attempt runs one attempt of it in one transaction. prior is the number of
// attempts made before as the caller knows them (server deliveries, local
// retries); the inbox row's count is taken into account too. It returns the
// outcome, or an *infraError, *poisonError, *exhaustedError or *handlerError.
func (s *Sink) attempt(ctx context.Context, it *item, prior int) (outcome, error) {
	out, err := s.attemptTx(ctx, it, prior)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && strings.HasSuffix(pgErr.ConstraintName, "_stream_seq_key") {
		// Another event's row holds this (stream, stream_seq): the stream was
		// deleted and recreated, so sequences restarted. The old row's
		// sequence is history; free it and try again.
		s.log.Warn().Str("stream", it.stream).Uint64("stream_seq", it.seq).
			Msg("stream sequence already in the inbox for another event (stream recreated?); clearing the old row's sequence")
		if _, ferr := s.db.Exec(ctx, s.inbox.freeSeq, it.stream, int64(it.seq), it.env.EventID); ferr != nil {
			return 0, &infraError{fmt.Errorf("free reused stream sequence: %w", ferr)}
		}
		out, err = s.attemptTx(ctx, it, prior)
	}
	return out, err
}

func (s *Sink) attemptTx(ctx context.Context, it *item, prior int) (outcome, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, &infraError{fmt.Errorf("begin inbox transaction: %w", err)}
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // no-op after commit

	env := it.env
	lsn, txIndex := it.positionArgs()
	var b pgx.Batch
	b.Queue(s.inbox.upsert, env.EventID, env.EventType, env.ResourceType, env.ResourceID, []byte(env.Payload),
		it.msg.Subject(), it.headersJSON(), it.stream, int64(it.seq), it.delivered, lsn, txIndex)
	b.Queue(s.inbox.setApplying, producerOf(env))
	checkPos := s.skipStale && it.hasPos && env.ResourceID != ""
	if checkPos {
		b.Queue(s.inbox.position, env.ResourceType, env.ResourceID, it.lsnArg(), it.pos.TxIndex, env.EventID, env.Producer)
	}
	br := tx.SendBatch(ctx, &b)
	var (
		status, lastErr string
		attempts        int
		inserted        bool
		sameMsg         bool
		newest          bool
	)
	err = br.QueryRow().Scan(&inserted, &status, &attempts, &lastErr, &sameMsg)
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil && checkPos {
		err = br.QueryRow().Scan(&newest)
		if errors.Is(err, pgx.ErrNoRows) {
			newest, err = false, nil
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, classifyDB(ctx, "write inbox row", err)
	}

	switch {
	case inserted:
		attempts = 0 // first sight of the event; the row is already written as processed
	case status == StatusProcessed, status == StatusStale:
		return outDuplicate, nil
	case status == StatusDead:
		if sameMsg {
			return outDeadSeen, nil
		}
		attempts = 0 // a new message of a dead-lettered event: a fresh start
	}
	if n := max(prior, attempts); n >= s.maxDeliver {
		return 0, &exhaustedError{attempts: n, last: lastErr}
	}
	if checkPos && !newest {
		if _, err := tx.Exec(ctx, s.inbox.stale, env.EventID, it.stream, int64(it.seq), it.delivered, lsn, txIndex, inserted); err != nil {
			return 0, classifyDB(ctx, "mark inbox row stale", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, classifyDB(ctx, "commit stale inbox row", err)
		}
		return outStale, nil
	}

	ev := Event{Envelope: env, Body: it.msg.Data(), Subject: it.msg.Subject(), Header: it.msg.Headers(),
		Stream: it.stream, Sequence: it.seq, Deliveries: it.delivered}
	if ch, ok := s.handler.(callHandler); ok && ch.outside(env, ev.Subject) != nil {
		// A webhook call takes one of the CONCURRENCY call slots, which
		// batches share (batch.go).
		select {
		case s.callSlots <- struct{}{}:
			defer func() { <-s.callSlots }()
		case <-ctx.Done():
			return 0, &infraError{fmt.Errorf("handler interrupted: %w", ctx.Err())}
		}
	}
	start := time.Now()
	herr := s.handler.Handle(ctx, tx, &ev)
	s.obs.HandlerDone(time.Since(start), herr)
	if herr != nil {
		// A dead connection or an ended context is not the handler's fault.
		if ctx.Err() != nil || tx.Conn().IsClosed() {
			return 0, &infraError{fmt.Errorf("handler interrupted: %w", herr)}
		}
		return 0, classifyHandler("handler", herr)
	}
	if !inserted { // a row from an earlier delivery: failed, dead or in flight elsewhere
		if _, err := tx.Exec(ctx, s.inbox.processed, env.EventID, it.stream, int64(it.seq), it.delivered, lsn, txIndex); err != nil {
			return 0, classifyDB(ctx, "mark inbox row processed", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, classifyCommit(ctx, err)
	}
	return outApplied, nil
}

// Errors are sorted by SQLSTATE kind (package sqlstate), differently for
// the statements the sink owns and for the handler's:
//
//	kind                       handler or its commit          inbox statements
//	unavailable (08 53 57 58)  retry, not counted              retry, not counted
//	rollback (40)              retry, not counted              retry, not counted
//	timeout (57014 55P03)      attempt: BACKOFF, MAX_DELIVER   retry, not counted
//	data (22 23 54 44)         attempt (SQL handler: 22 and    poison
//	                           JBDLQ are permanent)
//	raised (P0 38 39 09 27 2F) attempt                         poison
//	config (42 0A 28 3D 3F 2B) attempt                         stop the sink
//	internal (XX), state,      attempt                         stop the sink
//	unknown
//
// The handler's errors are its own business: whatever it fails with counts
// as an attempt, unless the server or the connection failed under it. The
// inbox's statements are always the same; when they fail on an event's
// values, the event is poison; when they fail for anything but an outage,
// every event would fail alike, so the sink stops with the error instead of
// retrying in silence or dead-lettering healthy events.

// classifyHandler sorts an error of the handler: the server or connection
// in trouble, or a transaction rolled back by Postgres for what ran beside
// it, is not the handler's fault and is not counted; anything else is an
// attempt that failed.
func classifyHandler(what string, err error) error {
	if _, kind, ok := sqlstate.Classify(err); ok && kind.Retryable() {
		return &infraError{fmt.Errorf("%s: rolled back by Postgres (%s), retrying: %w", what, kind, err)}
	}
	return &handlerError{err}
}

// classifyCommit sorts an error of COMMIT. When Postgres answered with an
// error, the transaction was rolled back and the outcome is known: a
// deferred constraint or constraint trigger refused the handler's writes,
// which is the handler's failure like any other (a SQLSTATE a SQL handler
// would treat as permanent is permanent here too). Only when no answer came
// (the connection was lost, the context ended) is the outcome unknown;
// retrying is safe then: a committed event is found processed.
func classifyCommit(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if ctx.Err() != nil || !errors.As(err, &pgErr) {
		return &infraError{fmt.Errorf("commit inbox transaction: %w", err)}
	}
	if permanentSQLState(pgErr.Code) {
		return &handlerError{&PermanentError{Reason: "commit refused: " + pgErr.Message + " (SQLSTATE " + pgErr.Code + ")", Err: err}}
	}
	return classifyHandler("commit", fmt.Errorf("commit refused: %w", err))
}

// classifyDB sorts an error of the inbox's own statements: see the table
// above. A unique violation of the stream sequence stays visible through
// the *poisonError (attempt mends the one it can).
func classifyDB(ctx context.Context, what string, err error) error {
	code, kind, ok := sqlstate.Classify(err)
	if !ok || ctx.Err() != nil {
		return &infraError{fmt.Errorf("%s: %w", what, err)}
	}
	switch kind {
	case sqlstate.Unavailable, sqlstate.Rollback, sqlstate.Timeout:
		return &infraError{fmt.Errorf("%s: %w", what, err)}
	case sqlstate.Data, sqlstate.Raised:
		var pgErr *pgconn.PgError
		errors.As(err, &pgErr)
		return &poisonError{reason: "inbox refuses the event: " + pgErr.Message + " (SQLSTATE " + code + ")", err: err}
	}
	return &fatalError{fmt.Errorf("%s: %w (SQLSTATE %s, %s): every event would fail alike; check the inbox tables (sink provision) and the sink's privileges", what, err, code, kind)}
}

// recordFailure records a failed attempt in its own short transaction and
// returns the stored attempt count. ok is false when the event was applied
// meanwhile (by another process).
func (s *Sink) recordFailure(ctx context.Context, it *item, attempt int, reason string) (n int, ok bool, err error) {
	env := it.env
	lsn, txIndex := it.positionArgs()
	err = s.db.QueryRow(ctx, s.inbox.failed, env.EventID, env.EventType, env.ResourceType, env.ResourceID, []byte(env.Payload),
		it.msg.Subject(), it.headersJSON(), it.stream, int64(it.seq), it.delivered, lsn, txIndex,
		truncate(reason, envelope.MaxErrorLen), attempt).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("record failed attempt: %w", err)
	}
	return n, true, nil
}

// recordDead marks the event's row dead after its dead letter is stored.
// A poison message gets a row only when its Nats-Msg-Id names the event.
func (s *Sink) recordDead(ctx context.Context, it *item, attempts int, reason string) error {
	var (
		id, eventType, resourceType, resourceID string
		payload                                 []byte
	)
	if it.env != nil {
		env := it.env
		id, eventType, resourceType, resourceID, payload = env.EventID, env.EventType, env.ResourceType, env.ResourceID, env.Payload
	} else {
		id = it.msg.Headers().Get(envelope.HeaderMsgID)
		if id == "" || len(id) > MaxEventIDLen { // no key the inbox can store
			return nil
		}
	}
	lsn, txIndex := it.positionArgs()
	exec := func(payload []byte) error {
		_, err := s.db.Exec(ctx, s.inbox.dead, toValidText(id), nullIfEmpty(eventType), nullIfEmpty(resourceType), nullIfEmpty(resourceID),
			payload, toValidText(it.msg.Subject()), it.headersJSON(), it.stream, int64(it.seq), it.delivered, lsn, txIndex,
			truncate(reason, envelope.MaxErrorLen), attempts)
		return err
	}
	err := exec(payload)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22") && payload != nil {
		err = exec(nil) // the payload is what Postgres refused to store
	}
	if err != nil {
		return fmt.Errorf("mark inbox row dead: %w", err)
	}
	return nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return toValidText(s)
}

// toValidText makes a string storable in a text column: valid UTF-8, no NUL.
func toValidText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// truncate cuts s to at most n bytes on a rune boundary, valid for text.
func truncate(s string, n int) string {
	s = toValidText(s)
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// DB is the part of a pool the sink uses; *pgxpool.Pool implements it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Ping(ctx context.Context) error
	Acquire(ctx context.Context) (*pgxpool.Conn, error)
}

var _ DB = (*pgxpool.Pool)(nil)
