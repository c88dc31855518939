package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// prune deletes outbox rows older than OUTBOX_RETENTION in small batches,
// but only rows whose events the slot has confirmed: the rows are the only
// copy `relay backfill` can recover from after a lost slot, so a row whose
// transaction the slot may still have to stream is never deleted.
//
// A row does not record its transaction's commit position, so the bound is
// taken in two steps (a mark, then a delete once the slot passed it):
//
//  1. Mark: read X0, the oldest transaction id still running (the xmin of a
//     fresh snapshot), then L0, the WAL insert position. A transaction whose
//     id precedes X0 had ended when the snapshot was taken; if it committed,
//     its commit record was written before it became visible, so before L0.
//     A subtransaction's id follows its parent's, so this holds for rows
//     inserted in subtransactions too.
//  2. Delete: once the slot's confirmed_flush_lsn is at or past L0, every
//     transaction that committed before L0 has been streamed and its events
//     acknowledged by JetStream (the relay never confirms past an unacked
//     publish). So every visible row whose xmin precedes X0 is published:
//     those older than the retention go.
//
// Transaction ids have no order operator; age() measures both from the same
// point, so age(xmin) > age(X0) means xmin precedes X0. A row frozen so long
// ago that its raw xmin has wrapped compares as newer and is kept: the error
// is always on the safe side.
//
// Only the relay that holds the slot and streams prunes (a standby knows
// nothing of the slot's progress), and only while the slot exists with its
// WAL reserved: a lost or missing slot means rows may have to be backfilled.
// Any of those resets the mark. A long-running transaction anywhere in the
// cluster holds X0 back, which delays pruning but never makes it unsafe.
// Rows committed before the slot existed are never streamed; they are
// pruned like the others once older than the retention, so backfill them
// before enabling it (the relay warns about them at start).
func (r *Relay) prune(ctx context.Context) error {
	if r.opts.OutboxRetention <= 0 {
		return nil
	}
	table, _ := migrations.QuoteQualified(r.opts.OutboxTable) // validated at start
	t := time.NewTicker(r.opts.PruneInterval)
	defer t.Stop()
	var mark *pruneMark
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var err error
		mark, err = r.pruneStep(ctx, table, mark)
		if err != nil && ctx.Err() == nil {
			r.log.Warn().Err(err).Msg("outbox prune failed")
		}
	}
}

// pruneMark is a point after which every transaction older than xmin is
// known to have committed (or aborted) before lsn.
type pruneMark struct {
	xmin string // a 32-bit transaction id, as text
	lsn  pglogrepl.LSN
}

// pruneStep deletes what mark allows once the slot has passed it, and
// returns the mark to wait for next.
func (r *Relay) pruneStep(ctx context.Context, table string, mark *pruneMark) (*pruneMark, error) {
	skip := func(reason string) (*pruneMark, error) {
		r.log.Debug().Str("reason", reason).Msg("outbox prune skipped")
		return nil, nil
	}
	if !r.stream.State().Replicating {
		return skip("this relay does not hold the slot")
	}
	info, err := cdc.ReadSlot(ctx, r.opts.DB, r.opts.Slot)
	switch {
	case err != nil:
		return nil, fmt.Errorf("read slot: %w", err)
	case info == nil:
		return skip("slot missing")
	case info.WALStatus != "reserved" && info.WALStatus != "extended":
		return skip("slot wal_status " + info.WALStatus)
	}
	if mark != nil {
		if info.ConfirmedLSN < mark.lsn {
			r.log.Debug().Str("confirmed_lsn", info.ConfirmedLSN.String()).Str("waiting_for", mark.lsn.String()).
				Msg("outbox prune waits for the slot to confirm")
			return mark, nil
		}
		total := int64(0)
		for ctx.Err() == nil {
			tag, err := r.opts.DB.Exec(ctx, `DELETE FROM `+table+` WHERE id IN (SELECT id FROM `+table+
				` WHERE occurred_at < now() - make_interval(secs => $1) AND age(xmin) > age($2::text::xid) ORDER BY id LIMIT 1000)`,
				r.opts.OutboxRetention.Seconds(), mark.xmin)
			if err != nil {
				return mark, fmt.Errorf("delete outbox rows: %w", err)
			}
			total += tag.RowsAffected()
			if tag.RowsAffected() < 1000 {
				break
			}
		}
		if total > 0 {
			r.log.Info().Int64("rows", total).Dur("retention", r.opts.OutboxRetention).Str("confirmed_lsn", info.ConfirmedLSN.String()).
				Msg("pruned outbox")
		}
	}
	// In this order: the snapshot first, then the WAL position.
	next := &pruneMark{}
	if err := r.opts.DB.QueryRow(ctx, `SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296)::text`).
		Scan(&next.xmin); err != nil {
		return nil, fmt.Errorf("read oldest running transaction: %w", err)
	}
	var lsn string
	if err := r.opts.DB.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return nil, fmt.Errorf("read wal position: %w", err)
	}
	if next.lsn, err = pglogrepl.ParseLSN(lsn); err != nil {
		return nil, fmt.Errorf("read wal position: %w", err)
	}
	return next, nil
}
