package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// audit compares the stream's messages on the sink's filter subject with the
// inbox: events not applied, dead, stale. It only reads (see internal/audit).
func (m *Main) audit(ctx context.Context, args []string) error {
	var f audit.Flags
	if err := m.Flags("audit", args, func(fs *flag.FlagSet) { f.Define(fs, false) }); err != nil {
		return err
	}
	w, err := f.Window(time.Now())
	if err != nil {
		return cli.Usagef("audit: %w (see sink audit --help)", err)
	}
	c, err := m.load(false)
	if err != nil {
		return err
	}
	table, _ := migrations.QuoteQualified(c.InboxTable)
	nc, js, err := m.ConnectJetStream(ctx, &c.Common, "audit")
	if err != nil {
		return err
	}
	defer nc.Close()
	conn, err := pgx.Connect(ctx, c.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.Background())
	filter := c.Filter()
	if c.Partitions > 0 {
		filter = envelope.PartitionFilter(filter) // every partition
	}
	rep, err := audit.Sink(ctx, conn, js, audit.SinkOptions{Window: w, Stream: c.StreamName, Filter: filter, InboxTable: table})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return audit.Write(m.Stdout, rep, f.JSON)
}
