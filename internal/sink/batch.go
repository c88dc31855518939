package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
)

// Batches. When the handler is a SQL statement, a worker applies the heads
// of several ready lanes (different keys, so no order between them) in one
// transaction sent as one pipeline — BEGIN, then per event the inbox insert,
// jetstream_bridge.applying, the SKIP_STALE position and the handler, then
// COMMIT — one round trip and one WAL flush for all of them. Each event keeps
// its guarantees: its inbox row and its handler's writes commit together,
// and its message is acked only after the commit.
//
// The pipeline cannot look at a result before it commits, so it only takes
// the path every new event takes: the statements are written to fail when
// an event needs anything else (its inbox row exists: a duplicate, a retry,
// a dead letter; it is stale; the handler fails). A failure rolls the whole
// transaction back; the event whose statement failed is applied on its own
// through the one-event path (sink.go), which sorts it out — ack a
// duplicate, retry, dead-letter — and the others go again as a batch. A
// failure that names no event sends every event down the one-event path:
// when the connection was lost, an event whose commit did go through is
// found processed and acked; when COMMIT itself was refused (a deferred
// constraint or constraint trigger, a serialization failure), the one-event
// path finds which event it was. The events sent down that path each get
// their first attempt at once and the failing one waits out its BACKOFF on
// its own (applyAlone, sink.go), so that one bad event neither holds the
// others of its batch nor retries for ever as an outage.

// statementHandler is a handler that is one SQL statement taking the
// message body as $1, so that it can join a batch.
type statementHandler interface {
	// statement returns the statement for the event, or "" when the event
	// must be applied on its own.
	statement(env *envelope.Envelope, subject string) string
}

// callHandler is a handler whose effect is outside the database (a
// webhook), so that several events' inbox rows can share one transaction
// around their calls (applyCalls).
type callHandler interface {
	// outside returns the handler to call for the event, or nil when the
	// event must be applied on its own.
	outside(env *envelope.Envelope, subject string) Handler
}

// Batch kinds (item.batch): a batch holds events of one kind.
const (
	batchSQL  = 1 // SQL statements in one pipeline (batchTx)
	batchCall = 2 // calls outside the database, inbox rows in one transaction (applyCalls)
)

// batchable reports whether it can join a batch: a parsed envelope, a SQL
// statement handler or a webhook, and a delivery that cannot be exhausted
// yet (an event whose row is new has made no attempt but the server's
// deliveries). A webhook event whose key SKIP_STALE checks goes alone: its
// position must be looked at before the call. It runs under the
// dispatcher's lock and decides once per message.
func (s *Sink) batchable(it *item) bool {
	if it.batch == 0 {
		it.batch = -1
		if it.poison == nil && it.delivered >= 1 && it.delivered <= s.maxDeliver {
			if sh, ok := s.handler.(statementHandler); ok {
				if it.stmt = sh.statement(it.env, it.msg.Subject()); it.stmt != "" {
					it.batch = batchSQL
				}
			}
			if ch, ok := s.handler.(callHandler); ok && it.batch < 0 && !(s.skipStale && it.hasPos && it.env.ResourceID != "") {
				if it.call = ch.outside(it.env, it.msg.Subject()); it.call != nil {
					it.batch = batchCall
				}
			}
		}
	}
	return it.batch > 0
}

// applyBatch takes claims' heads to their end: applied together, or on
// their own after a failed batch. Every lane is released.
func (s *Sink) applyBatch(ctx context.Context, stop <-chan struct{}, d *dispatcher, claims []claim) {
	if claims[0].it.batch == batchCall {
		s.applyCalls(ctx, stop, d, claims)
		return
	}
	var alone []claim
	for len(claims) > 0 {
		var spans []trace.Span // SQL statements only: nothing runs inside them
		if s.tracer != nil {
			spans = s.startBatch(ctx, claims)
		}
		bad, err := s.batchTx(ctx, claims)
		if spans != nil {
			endBatch(spans, bad, err)
		}
		if err == nil {
			for _, c := range claims {
				s.settle(d, c.it, outApplied)
				s.release(d, c, 0)
			}
			break
		}
		if e := s.log.Debug(); e.Enabled() {
			e.Err(err).Int("events", len(claims)).Int("failed_event", bad).Msg("batch rolled back; applying the failing event on its own")
		}
		if bad < 0 {
			alone = append(alone, claims...)
			break
		}
		alone = append(alone, claims[bad])
		claims = append(claims[:bad:bad], claims[bad+1:]...)
	}
	s.applyAlone(ctx, stop, d, alone)
}

// startBatch starts one span per event of a batch (trace.go).
func (s *Sink) startBatch(ctx context.Context, claims []claim) []trace.Span {
	spans := make([]trace.Span, len(claims))
	for i, c := range claims {
		_, spans[i] = s.startApply(ctx, c.it, c.it.delivered, len(claims))
	}
	return spans
}

// endBatch ends a batch's spans: processed, or rolled back with the event
// at fault (bad; -1 when the failure names none) failed.
func endBatch(spans []trace.Span, bad int, err error) {
	for i, span := range spans {
		switch {
		case err == nil:
			endApply(span, outApplied, nil)
		case i == bad || bad < 0:
			endApply(span, 0, err)
		default:
			span.SetAttributes(tracing.Status.String("rolled_back"))
			span.End()
		}
	}
}

// batchTx applies claims' events in one transaction. On failure it returns
// the index of the claim whose statement failed, or -1 when the failure
// names no event.
func (s *Sink) batchTx(ctx context.Context, claims []claim) (bad int, err error) {
	conn, err := s.db.Acquire(ctx)
	if err != nil {
		return -1, err
	}
	defer conn.Release() // a connection left inside a transaction is closed, not reused

	b := pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 2+5*len(claims))}
	owner := make([]int16, 1, 2+5*len(claims)) // claim index of each statement; -1 for BEGIN and COMMIT
	owner[0] = -1
	b.Queue("BEGIN")
	applying := ""
	for i, c := range claims {
		it, env := c.it, c.it.env
		lsn, txIndex := it.positionArgs()
		b.Queue(s.inbox.insertNew, env.EventID, env.EventType, env.ResourceType, env.ResourceID, []byte(env.Payload),
			it.msg.Subject(), it.headersJSON(), it.stream, int64(it.seq), it.delivered, lsn, txIndex)
		owner = append(owner, int16(i))
		// The setting lasts until COMMIT: set it again only when this
		// event's producer differs from the one before.
		if p := producerOf(env); p != applying {
			applying = p
			b.Queue(s.inbox.setApplying, p)
			owner = append(owner, int16(i))
		}
		if s.skipStale && it.hasPos && env.ResourceID != "" {
			b.Queue(s.inbox.positionNewest, env.ResourceType, env.ResourceID, it.lsnArg(), it.pos.TxIndex, env.EventID, env.Producer)
			owner = append(owner, int16(i))
		}
		b.Queue(it.stmt, it.msg.Data())
		owner = append(owner, int16(i))
	}
	if f := s.part.fence; f != nil {
		b.Queue(f.batchCheck(), f.args()...)
		owner = append(owner, -1)
	}
	b.Queue("COMMIT")
	owner = append(owner, -1)

	start := time.Now()
	br := conn.SendBatch(ctx, &b)
	failed := -1
	for q := range owner {
		if _, err = br.Exec(); err != nil {
			failed = q
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if !conn.Conn().IsClosed() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK") //nolint:errcheck // if it fails, Release closes the connection
			cancel()
		}
		var pgErr *pgconn.PgError
		if failed >= 0 && errors.As(err, &pgErr) && ctx.Err() == nil {
			return int(owner[failed]), err
		}
		return -1, err
	}
	elapsed := time.Since(start)
	for range claims {
		s.obs.HandlerDone(elapsed, nil)
	}
	return -1, nil
}

// Webhook batches. A webhook's effect is outside the database, so its
// inbox row needs no transaction of its own: a worker writes the new rows of
// several ready lanes' heads in one transaction (BEGIN and the inserts, one
// round trip), calls the webhook for each of them (in parallel, at most
// CONCURRENCY calls in flight across the workers) while the rows are
// written but not committed, deletes the rows of the calls that failed and
// commits (one round trip and one WAL flush for the batch), then acks the
// applied events. The guarantees of the one-event path hold:
//
//   - Dedupe: an event whose row exists (applied before, a retry, a dead
//     letter) fails its insert before any call; it is applied on its own and
//     the others go again. A second process delivering the same event waits
//     on the uncommitted row, then fails its insert, as in the one-event path.
//   - Ack after commit: nothing is acked before COMMIT has answered.
//   - Crash between the call and the commit: the rows were not committed, the
//     messages are redelivered and the webhook is called again with the same
//     Idempotency-Key. Webhooks are at-least-once, deduped by that key.
//   - A failed call is that event's attempt: its row is deleted before the
//     commit, and the failure is judged as in the one-event path (retry after
//     BACKOFF, MAX_DELIVER, dead-lettered at once when permanent), so one
//     failing receiver call does not hold the others of its batch.
//   - A COMMIT that fails sends every event down the one-event path: those
//     whose commit did go through are found processed and acked, the others
//     are called again (at-least-once, as above).

// applyCalls applies claims' heads, whose handlers are calls outside the
// database, with their inbox rows in one transaction. Every lane is
// released.
func (s *Sink) applyCalls(ctx context.Context, stop <-chan struct{}, d *dispatcher, claims []claim) {
	var alone []claim
	var failed []tries
	for len(claims) > 0 {
		var (
			bad int
			err error
		)
		failed, bad, err = s.callsTx(ctx, claims, failed[:0])
		if err == nil {
			applied := claims[:0:0]
			for i := range claims {
				if !slicesContainsClaim(failed, claims[i]) {
					applied = append(applied, claims[i])
				}
			}
			for _, c := range applied {
				s.settle(d, c.it, outApplied)
				s.release(d, c, 0)
			}
			break
		}
		failed = failed[:0]
		if e := s.log.Debug(); e.Enabled() {
			e.Err(err).Int("events", len(claims)).Int("failed_event", bad).Msg("webhook batch rolled back; applying events on their own")
		}
		if bad < 0 {
			alone = append(alone, claims...)
			break
		}
		alone = append(alone, claims[bad])
		claims = append(claims[:bad:bad], claims[bad+1:]...)
	}
	pend := make([]tries, 0, len(alone)+len(failed))
	for _, c := range alone {
		pend = append(pend, tries{c: c, infraWait: 250 * time.Millisecond})
	}
	s.applyPending(ctx, stop, d, append(pend, failed...))
}

// slicesContainsClaim reports whether one of ts is c's.
func slicesContainsClaim(ts []tries, c claim) bool {
	for i := range ts {
		if ts[i].c.it == c.it {
			return true
		}
	}
	return false
}

// callsTx writes claims' inbox rows, calls each claim's handler and commits
// the rows of the calls that succeeded. failed (appended to buf) are the
// claims whose call failed, each with its error as its first attempt's
// outcome; their rows are not committed. On a database failure it returns
// the index of the claim whose insert failed, or -1 when the failure names
// no event; no call has been made when the index is not -1.
func (s *Sink) callsTx(ctx context.Context, claims []claim, buf []tries) (failed []tries, bad int, err error) {
	conn, err := s.db.Acquire(ctx)
	if err != nil {
		return buf, -1, err
	}
	defer conn.Release() // a connection left inside a transaction is closed, not reused
	rollback := func() {
		if !conn.Conn().IsClosed() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(rctx, "ROLLBACK") //nolint:errcheck // if it fails, Release closes the connection
			cancel()
		}
	}

	b := pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 1+len(claims))}
	b.Queue("BEGIN")
	for _, c := range claims {
		it, env := c.it, c.it.env
		lsn, txIndex := it.positionArgs()
		b.Queue(s.inbox.insertNew, env.EventID, env.EventType, env.ResourceType, env.ResourceID, []byte(env.Payload),
			it.msg.Subject(), it.headersJSON(), it.stream, int64(it.seq), it.delivered, lsn, txIndex)
	}
	br := conn.SendBatch(ctx, &b)
	at := -1
	for q := range b.QueuedQueries {
		if _, err = br.Exec(); err != nil {
			at = q - 1 // the claim of insert q; -1 for BEGIN
			break
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		rollback()
		var pgErr *pgconn.PgError
		if at >= 0 && errors.As(err, &pgErr) && ctx.Err() == nil {
			return buf, at, err
		}
		return buf, -1, err
	}

	// The calls run in parallel (the events are of different keys), at most
	// CONCURRENCY in flight across all workers: a worker holding a large
	// batch uses the call slots the idle workers leave.
	errs := make([]error, len(claims))
	var spans []trace.Span // one apply span per event, the call's parent
	if s.tracer != nil {
		spans = make([]trace.Span, len(claims))
	}
	var calls sync.WaitGroup
	for i, c := range claims {
		select {
		case s.callSlots <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		calls.Go(func() {
			defer func() { <-s.callSlots }()
			it := c.it
			ev := Event{Envelope: it.env, Body: it.msg.Data(), Subject: it.msg.Subject(), Header: it.msg.Headers(),
				Stream: it.stream, Sequence: it.seq, Deliveries: it.delivered}
			cctx := ctx
			if spans != nil {
				cctx, spans[i] = s.startApply(ctx, it, it.delivered, len(claims))
			}
			start := time.Now()
			errs[i] = it.call.Handle(cctx, nil, &ev)
			s.obs.HandlerDone(time.Since(start), errs[i])
		})
	}
	calls.Wait()
	failed = buf
	var unclaim pgx.Batch
	for i, herr := range errs {
		if herr == nil {
			continue
		}
		if ctx.Err() != nil {
			herr = &infraError{fmt.Errorf("handler interrupted: %w", herr)}
		} else {
			herr = classifyHandler("handler", herr)
		}
		failed = append(failed, tries{c: claims[i], infraWait: 250 * time.Millisecond, first: herr})
		unclaim.Queue(s.inbox.unclaim, claims[i].it.env.EventID)
	}
	unclaim.Queue("COMMIT")
	if err := conn.SendBatch(ctx, &unclaim).Close(); err != nil {
		rollback()
		endCalls(spans, errs, err)
		return buf, -1, err
	}
	endCalls(spans, errs, nil)
	return failed, -1, nil
}

// endCalls ends a webhook batch's apply spans: each call's own outcome, or
// the COMMIT's failure for the calls that succeeded.
func endCalls(spans []trace.Span, errs []error, commit error) {
	for i, span := range spans {
		switch {
		case span == nil: // never called (shutdown)
		case errs[i] != nil:
			endApply(span, 0, errs[i])
		case commit != nil:
			endApply(span, 0, commit)
		default:
			endApply(span, outApplied, nil)
		}
	}
}

// producerOf is the value of jetstream_bridge.applying for env.
func producerOf(env *envelope.Envelope) string {
	if env.Producer == "" {
		return "jetstream-bridge"
	}
	return env.Producer
}

// InboxInsertSQL returns the statement with which a batch writes a new
// event's inbox row into table (schema.table; "" for the default), taking
// the same twelve parameters in the same order: event_id, event_type,
// resource_type, resource_id, payload, subject, headers, stream,
// stream_seq, deliveries, commit_lsn, tx_index. It is exported so that a
// measurement of what Postgres can do sends exactly the sink's SQL.
func InboxInsertSQL(table string) (string, error) {
	in, err := newInbox(table)
	if err != nil {
		return "", err
	}
	return in.insertNew, nil
}
