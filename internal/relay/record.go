package relay

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// ErrNoSlotRecord means the slot record table does not exist: the schema
// predates it; `relay provision` adds it.
var ErrNoSlotRecord = errors.New("slot record table does not exist")

// SlotRecorded reports whether the slot record table (next to the outbox
// table) holds a row for slot: the slot existed once, so its absence now
// means it was lost, not that this is a first start.
func SlotRecorded(ctx context.Context, q cdc.Querier, outboxTable, slot string) (bool, error) {
	table, err := migrations.QuoteQualified(migrations.SlotsTable(outboxTable))
	if err != nil {
		return false, err
	}
	var ok bool
	err = q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+table+" WHERE slot_name = $1)", slot).Scan(&ok)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return false, ErrNoSlotRecord
	}
	if err != nil {
		return false, fmt.Errorf("read slot record: %w", err)
	}
	return ok, nil
}

// recordSlot writes the slot's first record when it has none: from now on
// its absence is a loss to recover from.
func (r *Relay) recordSlot(ctx context.Context, info *cdc.SlotInfo) error {
	table, _ := migrations.QuoteQualified(migrations.SlotsTable(r.opts.OutboxTable))
	tag, err := r.opts.DB.Exec(ctx, "INSERT INTO "+table+` (slot_name, event, new_lsn)
		SELECT $1, 'created', $2::pg_lsn WHERE NOT EXISTS (SELECT 1 FROM `+table+` WHERE slot_name = $1)`,
		info.Name, info.ConfirmedLSN.String())
	if err != nil {
		return fmt.Errorf("record slot %q: %w", info.Name, err)
	}
	if tag.RowsAffected() > 0 {
		r.log.Info().Str("slot", info.Name).Str("confirmed_lsn", info.ConfirmedLSN.String()).Msg("replication slot recorded")
	}
	return nil
}
