package provision

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
)

// CreateSlot creates a permanent pgoutput slot unless it exists. It reports
// whether it created it.
func CreateSlot(ctx context.Context, connString, slot string) (bool, error) {
	cfg, err := cdc.ReplicationConfig(connString, "jetstream-bridge-provision")
	if err != nil {
		return false, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect for replication: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "NOEXPORT_SNAPSHOT",
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create replication slot %q: %w", slot, err)
	}
	return true, nil
}
