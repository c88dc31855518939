package localenv

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// OpenPool opens a connection pool to the database at url with at most
// maxConns connections; params are run-time parameters every connection
// sets (application_name, TimeZone, ...). Like pgxpool.NewWithConfig it does
// not wait for a first connection.
func OpenPool(ctx context.Context, url string, maxConns int32, params map[string]string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	cfg.MaxConns = maxConns
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return pool, nil
}

// BridgeSchemas returns the SQL of the bridge's outbox (as `relay provision`
// creates it) and inbox (as `sink provision` does), with the default names.
func BridgeSchemas() (outbox, inbox string, err error) {
	if outbox, err = migrations.Outbox(migrations.Names{}); err != nil {
		return "", "", fmt.Errorf("outbox schema: %w", err)
	}
	if inbox, err = migrations.Inbox(migrations.Names{}); err != nil {
		return "", "", fmt.Errorf("inbox schema: %w", err)
	}
	return outbox, inbox, nil
}

// ApplySQL runs the SQL scripts in order on one connection of pool, in one
// transaction under the migrations' advisory lock (see provision.Apply).
func ApplySQL(ctx context.Context, pool *pgxpool.Pool, sql ...string) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	defer conn.Release()
	return provision.Apply(ctx, conn.Conn(), sql...)
}
