package provision

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Outbox applies the outbox schema (table, publication, jetstream_publish)
// under the configured names.
func Outbox(ctx context.Context, databaseURL string, names migrations.Names) error {
	sql, err := migrations.Outbox(names)
	if err != nil {
		return err
	}
	return connectAndApply(ctx, databaseURL, "outbox schema", sql)
}

// Inbox applies the inbox schema (inbox table and per-key positions) under
// the configured names.
func Inbox(ctx context.Context, databaseURL string, names migrations.Names) error {
	sql, err := migrations.Inbox(names)
	if err != nil {
		return err
	}
	return connectAndApply(ctx, databaseURL, "inbox schema", sql)
}

// Partitions applies the schema of partitioned sinks (ownership and member
// tables) in the inbox table's schema.
func Partitions(ctx context.Context, databaseURL string, names migrations.Names) error {
	sql, err := migrations.Partitions(names)
	if err != nil {
		return err
	}
	return connectAndApply(ctx, databaseURL, "partition schema", sql)
}

func connectAndApply(ctx context.Context, databaseURL, what, sql string) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.Background())
	if err := Apply(ctx, conn, sql); err != nil {
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
