package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// audit compares the outbox rows committed since --since with the stream:
// missing, stored twice, out of commit order (package audit says how).
func (m *Main) audit(ctx context.Context, args []string) error {
	var f audit.Flags
	if err := m.Flags("audit", args, func(fs *flag.FlagSet) {
		f.Define(fs, true, "comma-separated stream subjects to read (default [{env}.]{app}.sync.>, which holds the DLQ subject too)")
	}); err != nil {
		return err
	}
	opts, err := f.Options(time.Now())
	if err != nil {
		return cli.Usagef("audit: %w", err)
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	s := c.Subjects()
	opts.Stream, opts.DLQ = c.StreamName, s.DLQ()
	opts.Subjects = f.SubjectList()
	if len(opts.Subjects) == 0 {
		prefix := ""
		if c.EnvName != "" {
			prefix = c.EnvName + "."
		}
		opts.Subjects = []string{prefix + c.AppName + ".sync.>"}
	}
	table, _ := migrations.QuoteQualified(c.OutboxTable) // validated

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

	rep, verdict := audit.AuditRelay(ctx, conn, js, audit.RelayOptions{Options: opts, OutboxTable: table})
	var gap *audit.GapError
	if verdict != nil && !errors.As(verdict, &gap) {
		return verdict
	}
	if err := audit.Write(m.Stdout, f.JSON, rep, audit.PrintRelay); err != nil {
		return err
	}
	return verdict
}
