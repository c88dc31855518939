package provision

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Outbox applies the outbox schema (table, publication, jetstream_publish)
// under the configured names, first bringing an existing table that lacks
// columns up to what the relay needs (see CheckTable).
func Outbox(ctx context.Context, databaseURL string, names migrations.Names) error {
	return connectAndApply(ctx, databaseURL, "outbox schema", func(conn *pgx.Conn) ([]string, error) {
		return OutboxSQL(ctx, conn, names)
	})
}

// Inbox applies the inbox schema (inbox table and per-key positions) under
// the configured names, first bringing an existing table that lacks columns
// up to what the sink needs (see CheckTable).
func Inbox(ctx context.Context, databaseURL string, names migrations.Names) error {
	return connectAndApply(ctx, databaseURL, "inbox schema", func(conn *pgx.Conn) ([]string, error) {
		return InboxSQL(ctx, conn, names)
	})
}

// OutboxSQL returns the statements Outbox runs: the upgrade of an existing
// table, then the schema.
func OutboxSQL(ctx context.Context, conn *pgx.Conn, names migrations.Names) ([]string, error) {
	return schemaSQL(ctx, conn, OutboxTable, names.Outbox, migrations.DefaultOutbox, func() (string, error) { return migrations.Outbox(names) })
}

// InboxSQL returns the statements Inbox runs: the upgrade of an existing
// table, then the schema.
func InboxSQL(ctx context.Context, conn *pgx.Conn, names migrations.Names) ([]string, error) {
	return schemaSQL(ctx, conn, InboxTable, names.Inbox, migrations.DefaultInbox, func() (string, error) { return migrations.Inbox(names) })
}

func schemaSQL(ctx context.Context, conn *pgx.Conn, kind, table, def string, schema func() (string, error)) ([]string, error) {
	sql, err := schema()
	if err != nil {
		return nil, err
	}
	if table == "" {
		table = def
	}
	r, err := CheckTable(ctx, conn, kind, table)
	if err != nil {
		return nil, err
	}
	return append(r.Upgrade, sql), nil
}

// SchemaSQL returns what Outbox (kind OutboxTable) or Inbox would run
// on the database, applying nothing: `provision --print-sql`.
func SchemaSQL(ctx context.Context, databaseURL, kind string, names migrations.Names) ([]string, error) {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.Background())
	if kind == OutboxTable {
		return OutboxSQL(ctx, conn, names)
	}
	return InboxSQL(ctx, conn, names)
}

// Partitions applies the schema of partitioned sinks (ownership and member
// tables) in the inbox table's schema.
func Partitions(ctx context.Context, databaseURL string, names migrations.Names) error {
	sql, err := migrations.Partitions(names)
	if err != nil {
		return err
	}
	return connectAndApply(ctx, databaseURL, "partition schema", func(*pgx.Conn) ([]string, error) { return []string{sql}, nil })
}

func connectAndApply(ctx context.Context, databaseURL, what string, render func(*pgx.Conn) ([]string, error)) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.Background())
	sql, err := render(conn)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := Apply(ctx, conn, sql...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Apply runs the given schema SQL in one transaction under an advisory lock,
// so several processes starting at once do not race on CREATE ... IF NOT EXISTS.
func Apply(ctx context.Context, conn *pgx.Conn, sql ...string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(7236418906571)"); err != nil {
		return fmt.Errorf("lock migration: %w", err)
	}
	for _, s := range sql {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("apply schema: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}

// WriteSQL writes statements for review (`provision --print-sql`), each
// ending with ";".
func WriteSQL(w io.Writer, sql []string) error {
	for _, s := range sql {
		s = strings.TrimSpace(s)
		if !strings.HasSuffix(s, ";") {
			s += ";"
		}
		if _, err := fmt.Fprintf(w, "%s\n\n", s); err != nil {
			return err
		}
	}
	return nil
}
