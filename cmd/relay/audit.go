package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// audit compares the outbox rows committed in a window with the stream:
// rows missing, events stored twice, messages out of commit order. It only
// reads (see internal/audit).
func (m *Main) audit(ctx context.Context, args []string) error {
	var f audit.Flags
	if err := m.Flags("audit", args, func(fs *flag.FlagSet) { f.Define(fs, true) }); err != nil {
		return err
	}
	w, err := f.Window(time.Now())
	if err != nil {
		return cli.Usagef("audit: %w (see relay audit --help)", err)
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	table, _ := migrations.QuoteQualified(c.OutboxTable)
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
	rep, err := audit.Relay(ctx, conn, js, audit.RelayOptions{Window: w, Stream: c.StreamName, OutboxTable: table, Subjects: c.Subjects()})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return audit.Write(m.Stdout, rep, f.JSON)
}
