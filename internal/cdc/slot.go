package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// SlotInfo describes a replication slot as pg_replication_slots and
// pg_stat_replication show it.
type SlotInfo struct {
	Name          string        `json:"slot"`
	Plugin        string        `json:"plugin"`
	Database      string        `json:"database"`
	Active        bool          `json:"active"`
	ActivePID     int           `json:"active_pid,omitempty"`
	RestartLSN    pglogrepl.LSN `json:"-"`
	ConfirmedLSN  pglogrepl.LSN `json:"-"`
	CurrentLSN    pglogrepl.LSN `json:"-"`
	WALStatus     string        `json:"wal_status"`         // reserved | extended | unreserved | lost
	SafeWALSize   *int64        `json:"safe_wal_size"`      // bytes left before max_slot_wal_keep_size; nil = unlimited
	LagBytes      int64         `json:"lag_bytes"`          // current WAL position minus confirmed position
	RetainedBytes int64         `json:"retained_wal_bytes"` // current WAL position minus restart position
	FlushLag      time.Duration `json:"flush_lag_ns"`       // walsender's flush lag while active
}

// Querier is what ReadSlot needs: a pgx connection or pool.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ReadSlot returns the slot's state, or nil when it does not exist.
func ReadSlot(ctx context.Context, q Querier, slot string) (*SlotInfo, error) {
	var (
		s                  SlotInfo
		pid                *int32
		restart, confirmed *string
		walStatus          *string
		current            string
		lag                *time.Duration
	)
	err := q.QueryRow(ctx, `
SELECT s.slot_name, coalesce(s.plugin, ''), coalesce(s.database, ''), s.active, s.active_pid,
       s.restart_lsn::text, s.confirmed_flush_lsn::text, s.wal_status, s.safe_wal_size,
       pg_current_wal_lsn()::text, r.flush_lag
FROM pg_replication_slots s
LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = $1`, slot).Scan(&s.Name, &s.Plugin, &s.Database, &s.Active, &pid,
		&restart, &confirmed, &walStatus, &s.SafeWALSize, &current, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read slot %q: %w", slot, err)
	}
	if pid != nil {
		s.ActivePID = int(*pid)
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if lag != nil {
		s.FlushLag = *lag
	}
	s.CurrentLSN, _ = pglogrepl.ParseLSN(current)
	if restart != nil {
		s.RestartLSN, _ = pglogrepl.ParseLSN(*restart)
		s.RetainedBytes = int64(s.CurrentLSN) - int64(s.RestartLSN)
	}
	if confirmed != nil {
		s.ConfirmedLSN, _ = pglogrepl.ParseLSN(*confirmed)
		s.LagBytes = max(int64(s.CurrentLSN)-int64(s.ConfirmedLSN), 0)
	}
	return &s, nil
}

// ErrSlotLost means Postgres removed WAL the slot still needed.
var ErrSlotLost = errors.New("replication slot lost")

// CheckSlot returns an error for a slot that cannot be used by this relay:
// lost, of another plugin, or of another database.
func CheckSlot(s *SlotInfo, database string) error {
	switch {
	case s.WALStatus == "lost":
		return fmt.Errorf("%w: slot %q has wal_status=lost: Postgres removed WAL it still needed "+
			"(max_slot_wal_keep_size), so outbox events committed while the relay was behind may be missing from the stream. "+
			"Recover: find the last event in the stream, drop the slot (SELECT pg_drop_replication_slot('%s')), "+
			"restart the relay (it creates a new slot from now), then republish outbox rows committed after that event "+
			"(INSERT a copy or use their event_id; the sink's inbox dedupes)", ErrSlotLost, s.Name, s.Name)
	case s.Plugin != "pgoutput":
		return fmt.Errorf("slot %q uses plugin %q, not pgoutput; set REPLICATION_SLOT to another name", s.Name, s.Plugin)
	case database != "" && s.Database != database:
		return fmt.Errorf("slot %q belongs to database %q, not %q; slot names are cluster-wide, set REPLICATION_SLOT", s.Name, s.Database, database)
	}
	return nil
}
