package sink

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
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

// batchable reports whether it can join a batch: a parsed envelope, a SQL
// statement handler, and a delivery that cannot be exhausted yet (an event
// whose row is new has made no attempt but the server's deliveries). It runs
// under the dispatcher's lock and decides once per message.
func (s *Sink) batchable(it *item) bool {
	if it.batch == 0 {
		it.batch = -1
		if sh, ok := s.handler.(statementHandler); ok && it.poison == nil && it.delivered >= 1 && it.delivered <= s.maxDeliver {
			if it.stmt = sh.statement(it.env, it.msg.Subject()); it.stmt != "" {
				it.batch = 1
			}
		}
	}
	return it.batch > 0
}

// applyBatch takes claims' heads to their end: applied together, or on
// their own after a failed batch. Every lane is released.
func (s *Sink) applyBatch(ctx context.Context, stop <-chan struct{}, d *dispatcher, claims []claim) {
	var alone []claim
	for len(claims) > 0 {
		bad, err := s.batchTx(ctx, claims)
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

// batchTx applies claims' events in one transaction. On failure it returns
// the index of the claim whose statement failed, or -1 when the failure
// names no event.
func (s *Sink) batchTx(ctx context.Context, claims []claim) (bad int, err error) {
	conn, err := s.db.Acquire(ctx)
	if err != nil {
		return -1, err
	}
	defer conn.Release() // a connection left inside a transaction is closed, not reused

	var b pgx.Batch
	owner := make([]int16, 1, 2+5*len(claims)) // claim index of each statement; -1 for BEGIN and COMMIT
	owner[0] = -1
	b.Queue("BEGIN")
	for i, c := range claims {
		it, env := c.it, c.it.env
		lsn, txIndex := it.positionArgs()
		b.Queue(s.inbox.insertNew, env.EventID, env.EventType, env.ResourceType, env.ResourceID, []byte(env.Payload),
			it.msg.Subject(), it.headersJSON(), it.stream, int64(it.seq), it.delivered, lsn, txIndex)
		b.Queue(s.inbox.setApplying, producerOf(env))
		owner = append(owner, int16(i), int16(i))
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

// producerOf is the value of jetstream_bridge.applying for env.
func producerOf(env *envelope.Envelope) string {
	if env.Producer == "" {
		return "jetstream-bridge"
	}
	return env.Producer
}
