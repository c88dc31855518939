package relay

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// ErrNoSlotRecord means the slot record cannot be used: the table does not
// exist (the schema predates it; `relay provision` adds it) or the relay's
// role may not read or write it.
var ErrNoSlotRecord = errors.New("slot record unusable")

// recordError sorts an error of the slot record table.
func recordError(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42501") {
		return fmt.Errorf("%w: %s: %w", ErrNoSlotRecord, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// SlotRecorded reports whether the slot record table (next to the outbox
// table) holds a row for slot: the slot existed once, so its absence now
// means it was lost, not that this is a first start.
func SlotRecorded(ctx context.Context, q cdc.Querier, outboxTable, slot string) (bool, error) {
	table, err := migrations.QuoteQualified(migrations.SlotsTable(outboxTable))
	if err != nil {
		return false, err
	}
	var ok bool
	if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+table+" WHERE slot_name = $1)", slot).Scan(&ok); err != nil {
		return false, recordError("read slot record", err)
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
		return recordError("record slot "+info.Name, err)
	}
	if tag.RowsAffected() > 0 {
		r.log.Info().Str("slot", info.Name).Str("confirmed_lsn", info.ConfirmedLSN.String()).Msg("replication slot recorded")
	}
	return nil
}

// lastRecord returns the newest record's event and reason for slot ("" when
// there is none).
func lastRecord(ctx context.Context, q cdc.Querier, outboxTable, slot string) (event, reason string, err error) {
	table, _ := migrations.QuoteQualified(migrations.SlotsTable(outboxTable))
	err = q.QueryRow(ctx, "SELECT event, coalesce(reason, '') FROM "+table+" WHERE slot_name = $1 ORDER BY id DESC LIMIT 1", slot).
		Scan(&event, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", nil
	}
	if err != nil {
		return "", "", recordError("read slot record", err)
	}
	return event, reason, nil
}
