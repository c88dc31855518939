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

// audit compares the stream's messages on the sink's subjects since --since
// with the inbox: applied, not yet applied, dead, stale (package audit says
// how).
func (m *Main) audit(ctx context.Context, args []string) error {
	var f audit.Flags
	if err := m.Flags("audit", args, func(fs *flag.FlagSet) {
		f.Define(fs, false, "comma-separated stream subjects to audit (default FILTER_SUBJECT)")
	}); err != nil {
		return err
	}
	opts, err := f.Options(time.Now())
	if err != nil {
		return cli.Usagef("audit: %w", err)
	}
	c, err := m.load(false)
	if err != nil {
		return err
	}
	opts.Stream, opts.Subjects = c.StreamName, f.SubjectList()
	if len(opts.Subjects) == 0 {
		opts.Subjects = []string{c.Filter()}
	}
	if c.UseDLQ {
		opts.DLQ = c.DLQ()
	}
	table, _ := migrations.QuoteQualified(c.InboxTable) // validated

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

	rep, verdict := audit.AuditSink(ctx, conn, js, audit.SinkOptions{Options: opts, InboxTable: table})
	var gap *audit.GapError
	if verdict != nil && !errors.As(verdict, &gap) {
		return verdict
	}
	if err := audit.Write(m.Stdout, f.JSON, rep, audit.PrintSink); err != nil {
		return err
	}
	return verdict
}
