package provision

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
)

// CreateSlot creates a permanent pgoutput slot unless it exists (on
// Postgres 17+ with failover = true). It reports
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
	// On Postgres 17+ the slot is a failover slot (cdc.FailoverSlots).
	_, err = cdc.CreateSlot(ctx, conn, slot, false)
	if errors.Is(err, cdc.ErrSlotExists) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}
