package relay

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// BackfillCounts is what Backfill did.
type BackfillCounts struct {
	Submitted    int64 // rows handed to the publisher (or counted, in a dry run)
	Acked        int64 // stored, dead letters included
	DeadLettered int64
	Skipped      int64 // refused with UseDLQ false: logged, the row stays
}

// Backfill republishes the outbox rows with occurred_at at or after since
// (every row when since is zero) from the table itself, through the same
// publisher options and dead-letter decisions as the live relay: a row
// refused for good (too large, no stream for its subject, outside the NATS
// user's publish permissions) is dead-lettered with the reason and the rest
// go on. Each row keeps its event id as Nats-Msg-Id; a row has no WAL
// position, so sinks never treat it as stale. conn must render timestamps
// in ISO format, UTC. Run must not be running.
func (r *Relay) Backfill(ctx context.Context, conn *pgx.Conn, since time.Time, dryRun bool) (BackfillCounts, error) {
	table, _ := migrations.QuoteQualified(r.opts.OutboxTable)
	rows, err := conn.Query(ctx, `SELECT `+outboxColumns+` FROM `+table+` WHERE occurred_at >= $1 ORDER BY id`, since)
	if err != nil {
		return BackfillCounts{}, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	return r.republish(ctx, rows, 0, dryRun)
}

// outboxColumns are the columns republish scans, in its order.
const outboxColumns = `event_id::text, resource_type, coalesce(resource_id, ''), event_type, payload::text,
	headers::text, coalesce(subject, ''), coalesce(destination, ''), coalesce(trace_id, ''), occurred_at::text`

// republish publishes outbox rows (outboxColumns, in id order) and waits
// for every ack: Backfill's and the slot recovery's one path.
//
// With at, a slot recovery's consistent point, each row gets the position
// (at, its rank in the read): every row read committed before at, and every
// transaction the new slot streams commits after it, so sinks that order
// events by position (SKIP_STALE) order the republished rows among
// themselves and before what follows. A backfill (at 0) publishes rows
// without a position: they may overlap what the relay streams at the same
// time, with later positions.
func (r *Relay) republish(ctx context.Context, rows pgx.Rows, at pglogrepl.LSN, dryRun bool) (BackfillCounts, error) {
	var n backfillCounter
	pub := publish.New(r.opts.JS, r.publishOptions())
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pctx) }()
	for rows.Next() {
		b := &backfilled{n: &n}
		var payload, headers string
		row := &b.r
		if err := rows.Scan(&row.EventID, &row.ResourceType, &row.ResourceID, &row.EventType, &payload, &headers,
			&row.Subject, &row.Destination, &row.TraceID, &row.OccurredAt); err != nil {
			return n.counts(), fmt.Errorf("read outbox row: %w", err)
		}
		row.Payload = []byte(payload)
		if headers != "{}" {
			row.Headers = []byte(headers)
		}
		var pos envelope.Position
		if at != 0 {
			pos = envelope.Position{CommitLSN: at, TxIndex: int(n.submitted.Load())}
		}
		var m *publish.Message
		if msg, berr := r.builder.Build(row, pos); berr == nil {
			m = &publish.Message{Subject: msg.Subject, Body: msg.Body, Header: msg.Header, MsgID: msg.MsgID}
		} else if m = r.rowDeadLetterFor(row, berr); m == nil {
			continue // USE_DLQ=false: logged and counted
		}
		m.Owner = b
		n.submitted.Add(1)
		if dryRun {
			continue
		}
		if err := pub.Publish(ctx, m); err != nil {
			return n.counts(), err
		}
	}
	if err := rows.Err(); err != nil {
		return n.counts(), fmt.Errorf("read outbox: %w", err)
	}
	if dryRun {
		return n.counts(), nil
	}
	for n.settled.Load() < n.submitted.Load() {
		select {
		case err := <-pubDone:
			return n.counts(), fmt.Errorf("backfill stopped after %d of %d: %w", n.acked.Load(), n.submitted.Load(), err)
		case <-ctx.Done():
			return n.counts(), fmt.Errorf("backfill interrupted after %d of %d acknowledged", n.acked.Load(), n.submitted.Load())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return n.counts(), nil
}

type backfillCounter struct {
	submitted, settled, acked, dead, skipped atomic.Int64
}

func (n *backfillCounter) counts() BackfillCounts {
	return BackfillCounts{Submitted: n.submitted.Load(), Acked: n.acked.Load(), DeadLettered: n.dead.Load(), Skipped: n.skipped.Load()}
}

// backfilled owns one row republished from the table.
type backfilled struct {
	r envelope.Row
	n *backfillCounter
}

func (b *backfilled) row() *envelope.Row { return &b.r }

// Settled counts the row once the publisher is done with it.
func (b *backfilled) Settled(m *publish.Message, ack *jetstream.PubAck) {
	switch {
	case ack == nil:
		b.n.skipped.Add(1)
	case m.Header.Get(envelope.HeaderErrorClass) != "":
		b.n.dead.Add(1)
		b.n.acked.Add(1)
	default:
		b.n.acked.Add(1)
	}
	b.n.settled.Add(1)
}
