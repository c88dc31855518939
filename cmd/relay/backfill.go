package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
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
	r, err := newRelay(ctx, c, log, nil)
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
	n, err := r.relay.Backfill(ctx, conn, from, dryRun)
	if err != nil {
		return err
	}
	if dryRun {
		fmt.Fprintf(m.Stdout, "dry run: %d rows would be republished\n", n.Submitted)
		return nil
	}
	fmt.Fprintf(m.Stdout, "backfill: %d rows republished (%d dead-lettered, %d skipped)\n", n.Acked, n.DeadLettered, n.Skipped)
	return nil
}
