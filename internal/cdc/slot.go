package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// ErrSlotExists means CREATE_REPLICATION_SLOT found the slot already there
// (42710 duplicate_object): another relay or an operator created it first.
var ErrSlotExists = errors.New("replication slot already exists")

// FailoverSlots reports whether a server of this major version creates
// slots with failover = true: Postgres 17 and later can synchronize such a
// slot to a standby (sync_replication_slots), so it survives a promotion
// and no recovery is needed. Older servers lose the slot on promotion and
// the relay recovers it (SLOT_RECOVERY=auto).
func FailoverSlots(major int) bool { return major >= 17 }

// CreateSlotCommand is the CREATE_REPLICATION_SLOT command for a permanent
// pgoutput slot on a server of this major version. export asks for a
// snapshot of the slot's consistent point, valid until the next command on
// the same replication connection; otherwise none is taken.
func CreateSlotCommand(slot string, major int, export bool) string {
	if FailoverSlots(major) {
		snapshot := "nothing"
		if export {
			snapshot = "export"
		}
		return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT '%s', FAILOVER true)", slot, snapshot)
	}
	action := "NOEXPORT_SNAPSHOT"
	if export {
		action = "EXPORT_SNAPSHOT"
	}
	return fmt.Sprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", slot, action)
}

// ServerMajor is the major version of the server conn is connected to, from
// its server_version parameter ("15.4 (Debian 15.4-1)", "17beta1"); 0 when
// unknown.
func ServerMajor(conn *pgconn.PgConn) int { return parseMajor(conn.ParameterStatus("server_version")) }

func parseMajor(v string) int {
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// CreatedSlot is a slot made by CreateSlot.
type CreatedSlot struct {
	LSN      pglogrepl.LSN // consistent point: the slot streams transactions committing after it
	Snapshot string        // exported snapshot, when asked for
	Failover bool
}

// CreateSlot creates the permanent pgoutput slot on a replication
// connection (ErrSlotExists when it is there already).
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, slot string, export bool) (*CreatedSlot, error) {
	major := ServerMajor(conn)
	res, err := pglogrepl.ParseCreateReplicationSlot(conn.Exec(ctx, CreateSlotCommand(slot, major, export)))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" {
		return nil, fmt.Errorf("%w: %q", ErrSlotExists, slot)
	}
	if err != nil {
		return nil, fmt.Errorf("create replication slot %q: %w", slot, err)
	}
	lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return nil, fmt.Errorf("create replication slot %q: consistent point: %w", slot, err)
	}
	return &CreatedSlot{LSN: lsn, Snapshot: res.SnapshotName, Failover: FailoverSlots(major)}, nil
}

// DropSlot drops the slot on a replication connection; a slot already gone
// is not an error.
func DropSlot(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	_, err := conn.Exec(ctx, "DROP_REPLICATION_SLOT "+slot).ReadAll()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("drop replication slot %q: %w", slot, err)
	}
	return nil
}
