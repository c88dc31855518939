package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Slot recovery (RecoverSlot, SLOT_RECOVERY=auto).
//
// The outbox is a table: after the slot is gone every event is still in it
// (pruning deletes only rows the slot confirmed, and never while it is
// missing or lost). So a relay that finds its slot missing (a promoted
// standby, which never had it; a dropped slot) or lost (max_slot_wal_keep_size)
// recreates it and republishes, from the table, the rows the stream may not
// hold:
//
//  1. The stream waits until every event it handed over is acked (they keep
//     their acks), so the stream's newest event is final.
//  2. Under an advisory lock on the slot's name (two relays, active and hot
//     standby, may both see the slot gone: the second waits and then finds
//     the slot there, so one slot creation means one backfill), the slot is
//     looked at again; a "recovering" record goes in (it stays the last
//     record if the relay dies before the end, and the next start redoes
//     the recovery); the slot is dropped if it is lost, or if it is what an
//     interrupted recovery left, and created with an exported snapshot
//     (cdc.Recovery).
//  3. Through that snapshot: the marker, the outbox row of the newest event
//     the stream stored from this producer (JetStream's last message on
//     {app}.sync.>, its Nats-Msg-Id is the event id); every row with
//     occurred_at at or after the marker's minus RecoveryMargin (a
//     transaction that began earlier may have committed later), or with a
//     greater id, is published again in id order, through Backfill's path
//     (same envelope, dead-letter decisions, Nats-Msg-Id = event id). No
//     marker (nothing in the stream, the row pruned, the stream unreadable):
//     every row in the table. JetStream's duplicate window drops what it
//     still remembers; sinks' inboxes drop the rest.
//  4. Every ack is in; the recovery is recorded in the slot record table,
//     logged at error level and counted. Only then does the stream start
//     replication from the slot's consistent point, so the snapshot (the
//     transactions committed before it) and the stream (those after it)
//     meet exactly.
//
// Events written as logical decoding messages (outbox_mode = 'message')
// have no row: those committed while the slot was gone cannot be
// recovered, and the log says so.
func (r *Relay) recoverSlot(ctx context.Context, rec *cdc.Recovery) error {
	began := time.Now()
	slot := r.opts.Slot
	conn, err := r.connectSQL(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended($1, 0))", "jetstream_bridge_slot:"+slot); err != nil {
		return fmt.Errorf("lock slot recovery: %w", err)
	}
	info, err := cdc.ReadSlot(ctx, conn, slot)
	if err != nil {
		return err
	}
	// Holding the lock, a last record "recovering" is no recovery in
	// progress: it was interrupted (the relay died) after it created the
	// slot, which then has no backfill behind it. It is redone.
	last, _, err := lastRecord(ctx, conn, r.opts.OutboxTable, slot)
	if err != nil {
		return err
	}
	if info != nil && info.WALStatus != "lost" && last != "recovering" {
		r.log.Warn().Str("slot", slot).Str("reason", rec.Reason).Msg("replication slot was recreated by another relay; not recovering")
		return nil
	}
	slots, _ := migrations.QuoteQualified(migrations.SlotsTable(r.opts.OutboxTable))
	if _, err := conn.Exec(ctx, "INSERT INTO "+slots+" (slot_name, event, reason, host) VALUES ($1, 'recovering', $2, $3)",
		slot, rec.Reason, rec.Host); err != nil {
		return recordError("record slot recovery", err)
	}
	created, err := rec.Create(ctx, info != nil)
	if errors.Is(err, cdc.ErrSlotExists) {
		// Created under the lock by something else than a relay (an
		// operator's `relay provision`): it has no backfill behind it. The
		// record now ends in "recovering", so the next attempt drops it
		// and recovers.
		return fmt.Errorf("slot created by someone else during the recovery; recovering again: %w", err)
	}
	if err != nil {
		return err
	}
	if !validSnapshot(created.Snapshot) {
		return fmt.Errorf("unexpected snapshot name %q", created.Snapshot)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return fmt.Errorf("begin snapshot transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+created.Snapshot+"'"); err != nil {
		return fmt.Errorf("import slot snapshot: %w", err)
	}
	marker := r.streamMarker(ctx)
	table, _ := migrations.QuoteQualified(r.opts.OutboxTable)
	var (
		markerID *int64
		markerAt *time.Time
	)
	if marker != "" {
		var id int64
		var at time.Time
		err := tx.QueryRow(ctx, "SELECT id, occurred_at FROM "+table+" WHERE event_id::text = $1", marker).Scan(&id, &at)
		switch {
		case err == nil:
			markerID, markerAt = &id, &at
		case errors.Is(err, pgx.ErrNoRows):
			r.log.Warn().Str("slot", slot).Str("marker_event_id", marker).
				Msg("the stream's newest event is not in the outbox (pruned): republishing every row")
		default:
			return fmt.Errorf("find marker row: %w", err)
		}
	}
	var rows pgx.Rows
	if markerID == nil {
		rows, err = tx.Query(ctx, "SELECT "+outboxColumns+" FROM "+table+" ORDER BY id")
	} else {
		rows, err = tx.Query(ctx, "SELECT "+outboxColumns+" FROM "+table+
			" WHERE id > $1 OR occurred_at >= $2 ORDER BY id", *markerID, markerAt.Add(-r.opts.RecoveryMargin))
	}
	if err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	n, err := r.republish(ctx, rows, created.LSN, false)
	rows.Close()
	if err != nil {
		return err
	}
	took := time.Since(began)
	var oldLSN *string
	if rec.OldLSN != 0 {
		s := rec.OldLSN.String()
		oldLSN = &s
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+slots+` (slot_name, event, reason, old_lsn, new_lsn, rows_republished, marker_event_id, duration_ms, host)
		VALUES ($1, 'recovered', $2, $3::pg_lsn, $4::pg_lsn, $5, nullif($6, ''), $7, $8)`,
		slot, rec.Reason, oldLSN, created.LSN.String(), n.Submitted, marker, took.Milliseconds(), rec.Host); err != nil {
		return fmt.Errorf("record slot recovery: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("record slot recovery: %w", err)
	}
	r.obs.SlotRecovered(rec.Reason, n.Submitted)
	r.log.Error().Str("slot", slot).Str("reason", rec.Reason).Str("db_host", rec.Host).
		Str("old_lsn", rec.OldLSN.String()).Str("new_lsn", created.LSN.String()).Bool("failover_slot", created.Failover).
		Str("marker_event_id", marker).Int64("rows_republished", n.Submitted).Int64("dead_lettered", n.DeadLettered).
		Int64("skipped", n.Skipped).Dur("duration", took).
		Msg("replication slot recovered: recreated and outbox rows republished; events written as logical decoding " +
			"messages (outbox_mode = 'message') while the slot was gone have no row and cannot be recovered; " +
			"run `relay audit` and `sink audit` to confirm nothing is missing")
	return nil
}

// pendingRecovery tells the stream, before it starts replication, that the
// slot record's last row is "recovering": another relay is recovering the
// slot right now (its slot exists, its backfill is not done), or one was
// interrupted. Either way the stream goes through recoverSlot, which waits
// on the lock and then finds the recovery done, or redoes it.
func (r *Relay) pendingRecovery(ctx context.Context) (string, error) {
	last, reason, err := lastRecord(ctx, r.opts.DB, r.opts.OutboxTable, r.opts.Slot)
	if err != nil || last != "recovering" {
		return "", err
	}
	return reason, nil
}

// validSnapshot accepts an exported snapshot's name ("00000003-00000002-1"),
// which goes into SET TRANSACTION SNAPSHOT as a literal.
func validSnapshot(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}

// connectSQL opens a plain connection rendering timestamps as the stream
// does (ISO, UTC), which republish's envelopes need.
func (r *Relay) connectSQL(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(r.opts.ConnString)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "jetstream-bridge-relay"
	cfg.RuntimeParams["DateStyle"] = "ISO, YMD"
	cfg.RuntimeParams["TimeZone"] = "UTC"
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// streamMarker returns the event id of the newest message the stream holds
// from this producer, "" when there is none or the stream cannot be read
// (then every row is republished; the log says why). It asks the stream
// directly ($JS.API.STREAM.MSG.GET.{stream}, the one JetStream API subject
// a relay with SLOT_RECOVERY=auto must be allowed to publish to), so it
// needs no stream-info permission.
func (r *Relay) streamMarker(ctx context.Context) string {
	filter := r.markerSubject()
	req, _ := json.Marshal(map[string]string{"last_by_subj": filter})
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := r.opts.NC.RequestWithContext(rctx, "$JS.API.STREAM.MSG.GET."+r.opts.Stream, req)
	if err != nil {
		r.log.Warn().Err(err).Str("stream", r.opts.Stream).Str("subject", filter).
			Msg("cannot read the stream's newest event: republishing every outbox row")
		return ""
	}
	var resp struct {
		Message *struct {
			Hdrs []byte `json:"hdrs"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || resp.Message == nil {
		if resp.Error != nil && resp.Error.Code != 404 {
			r.log.Warn().Int("code", resp.Error.Code).Str("error", resp.Error.Description).Str("stream", r.opts.Stream).
				Msg("cannot read the stream's newest event: republishing every outbox row")
		}
		return ""
	}
	h, err := nats.DecodeHeadersMsg(resp.Message.Hdrs)
	if err != nil {
		return ""
	}
	return markerID(h)
}

// markerID is the event id a stored message stands for: its Nats-Msg-Id,
// or for a relay dead letter the original's.
func markerID(h nats.Header) string {
	return strings.TrimPrefix(h.Get(envelope.HeaderMsgID), envelope.DLQPrefix)
}

// markerSubject is where this producer's events live: [{env}.]{app}.sync.>.
func (r *Relay) markerSubject() string {
	s := r.opts.Subjects
	if s.Env == "" {
		return s.App + ".sync.>"
	}
	return s.Env + "." + s.App + ".sync.>"
}
