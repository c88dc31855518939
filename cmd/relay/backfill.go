package main

import (
	"context"
	"flag"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// backfill republishes outbox rows from the table itself rather than the WAL:
// rows written before the replication slot existed, or committed while a lost
// slot was being recreated. Each row keeps its event id as Nats-Msg-Id, so
// JetStream drops copies within the duplicate window and sinks' inboxes drop
// the rest: running it twice, or over rows already relayed, is safe.
func (m *Main) backfill(ctx context.Context, args []string) error {
	var since string
	var dryRun bool
	if err := m.Flags("backfill", args, func(fs *flag.FlagSet) {
		fs.StringVar(&since, "since", "", "only rows with occurred_at at or after this time (RFC 3339); required, or 'all'")
		fs.BoolVar(&dryRun, "dry-run", false, "count the rows, publish nothing")
	}); err != nil {
		return err
	}
	from := time.Time{}
	switch since {
	case "":
		return cli.Usagef("backfill: --since RFC3339-time or --since all is required (see relay backfill --help)")
	case "all":
	default:
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return cli.Usagef("backfill: --since %q: expected RFC 3339 such as 2026-01-02T15:04:05Z, or all", since)
		}
		from = t
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	log := config.NewLogger(&c.Common, m.Stderr, "relay")
	r, err := newRelay(ctx, c, log)
	if err != nil {
		return err
	}
	defer r.Close()

	pcfg, err := pgx.ParseConfig(c.DatabaseURL)
	if err != nil {
		return fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	pcfg.RuntimeParams["DateStyle"] = "ISO, YMD"
	pcfg.RuntimeParams["TimeZone"] = "UTC"
	conn, err := pgx.ConnectConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.Background())
	table, _ := migrations.QuoteQualified(c.OutboxTable)
	rows, err := conn.Query(ctx, `SELECT event_id::text, resource_type, coalesce(resource_id, ''), event_type, payload::text,
		headers::text, coalesce(subject, ''), coalesce(destination, ''), coalesce(trace_id, ''), occurred_at::text
		FROM `+table+` WHERE occurred_at >= $1 ORDER BY id`, from)
	if err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()

	// The same decisions as the live relay: a row refused for good (too
	// large, no stream for its subject, outside the NATS user's publish
	// permissions) is dead-lettered with the reason and the rest go on.
	var submitted, acked, dead, skipped atomic.Int64
	opts := r.publishOptions()
	opts.Acked = func(m *publish.Message, _ *jetstream.PubAck) {
		if m.Header.Get(envelope.HeaderErrorClass) != "" {
			dead.Add(1)
		}
		acked.Add(1)
	}
	opts.Rejected = func(m *publish.Message, cause error) (*publish.Message, error) {
		dl, err := r.rejected(m, cause)
		if dl == nil && err == nil {
			skipped.Add(1) // USE_DLQ=false: logged, the row stays in the table
		}
		return dl, err
	}
	pub := publish.New(r.js, opts)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pctx) }()
	for rows.Next() {
		var row envelope.Row
		var payload, headers string
		if err := rows.Scan(&row.EventID, &row.ResourceType, &row.ResourceID, &row.EventType, &payload, &headers,
			&row.Subject, &row.Destination, &row.TraceID, &row.OccurredAt); err != nil {
			return fmt.Errorf("read outbox row: %w", err)
		}
		row.Payload = []byte(payload)
		if headers != "{}" {
			row.Headers = []byte(headers)
		}
		msg, berr := r.builder.Build(&row, envelope.Position{})
		var pm *publish.Message
		if berr != nil {
			ev := r.rowDeadLetterFor(&row, berr)
			if ev == nil {
				continue
			}
			pm = ev
			pm.Ref = &cdc.Event{Row: row}
		} else {
			// Backfilled rows have no WAL position: sinks never treat them as stale.
			msg.Header.Del(envelope.HeaderCommitLSN)
			msg.Header.Del(envelope.HeaderTxIndex)
			pm = &publish.Message{Subject: msg.Subject, Body: msg.Body, Header: msg.Header, MsgID: msg.MsgID, Ref: &cdc.Event{Row: row}}
		}
		submitted.Add(1)
		if dryRun {
			continue
		}
		if err := pub.Publish(ctx, pm); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	if dryRun {
		fmt.Fprintf(m.Stdout, "dry run: %d rows would be republished\n", submitted.Load())
		return nil
	}
	for acked.Load()+skipped.Load() < submitted.Load() {
		select {
		case err := <-pubDone:
			return fmt.Errorf("backfill stopped after %d of %d: %w", acked.Load(), submitted.Load(), err)
		case <-ctx.Done():
			return fmt.Errorf("backfill interrupted after %d of %d acknowledged", acked.Load(), submitted.Load())
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprintf(m.Stdout, "backfill: %d rows republished (%d dead-lettered, %d skipped)\n", acked.Load(), dead.Load(), skipped.Load())
	return nil
}
