package relay

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// start provisions (when asked), then refuses to run where nothing would
// ever be streamed: a lost or missing slot, a server without logical
// decoding, a publication that does not carry the outbox's inserts.
func (r *Relay) start(ctx context.Context) error {
	if r.opts.Provision != nil {
		if err := r.opts.Provision(ctx); err != nil {
			return err
		}
	}
	if err := r.checkSlot(ctx, r.opts.Provision == nil); err != nil {
		return err
	}
	return r.preflight(ctx)
}

// checkSlot verifies the slot at start. With RecoverSlot, a slot that is
// lost, or missing although the slot record says it existed, is left to
// the stream to recover before it streams; a slot missing without any
// record is a first start (provisioning creates it; nothing is
// backfilled). A slot that exists gets its first record.
func (r *Relay) checkSlot(ctx context.Context, mustExist bool) error {
	for wait := backoff.New(250*time.Millisecond, 10*time.Second); ; {
		err := r.readSlotAtStart(ctx, mustExist)
		if err == nil || isFatal(err) || errors.Is(err, cdc.ErrSlotMissing) || errors.Is(err, cdc.ErrSlotLost) ||
			errors.Is(err, errSlotUnusable) {
			return err
		}
		r.log.Warn().Err(err).Dur("retry_in", wait.Delay()).Msg("cannot read replication slot, retrying")
		if !wait.Wait(ctx) {
			return nil
		}
	}
}

// errSlotUnusable marks a slot of another plugin or database.
var errSlotUnusable = errors.New("replication slot unusable")

func (r *Relay) readSlotAtStart(ctx context.Context, mustExist bool) error {
	info, err := cdc.ReadSlot(ctx, r.opts.DB, r.opts.Slot)
	if err != nil {
		return err
	}
	recorded := false
	if r.opts.RecoverSlot {
		recorded, err = SlotRecorded(ctx, r.opts.DB, r.opts.OutboxTable, r.opts.Slot)
		if errors.Is(err, ErrNoSlotRecord) {
			r.noRecovery(err)
		} else if err != nil {
			return err
		}
	}
	switch {
	case info == nil && recorded:
		r.log.Error().Str("slot", r.opts.Slot).Msg("replication slot missing although it existed (promoted standby or dropped): recovering")
		r.stream.RequestRecovery("missing")
		return nil
	case info == nil && mustExist:
		return fmt.Errorf("%w: %q; run `relay provision` with admin credentials or set AUTO_PROVISION=true", cdc.ErrSlotMissing, r.opts.Slot)
	case info == nil:
		return nil
	}
	r.obs.Slot(info)
	if recorded {
		last, reason, err := lastRecord(ctx, r.opts.DB, r.opts.OutboxTable, r.opts.Slot)
		if err != nil {
			return err
		}
		if last == "recovering" {
			r.log.Error().Str("slot", r.opts.Slot).Str("reason", reason).
				Msg("a slot recovery was interrupted after it created the slot: recovering again")
			r.stream.RequestRecovery(reason)
		}
	}
	if info.WALStatus == "lost" && r.opts.RecoverSlot {
		r.log.Error().Str("slot", r.opts.Slot).Msg("replication slot lost (wal_status=lost): recovering")
		r.stream.RequestRecovery("lost")
		info.WALStatus = "" // checked for plugin and database below
	}
	if err := cdc.CheckSlot(info, r.dbName); err != nil {
		if errors.Is(err, cdc.ErrSlotLost) {
			return err
		}
		return fmt.Errorf("%w: %w", errSlotUnusable, err)
	}
	if r.opts.RecoverSlot && !recorded {
		if err := r.recordSlot(ctx, info); errors.Is(err, ErrNoSlotRecord) {
			r.noRecovery(err)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// noRecovery turns slot recovery off for this run: without its record a
// lost slot cannot be told from a first start. Said at error level, since
// a lost slot then stops the relay as with SLOT_RECOVERY=manual.
func (r *Relay) noRecovery(err error) {
	r.log.Error().Err(err).Str("table", migrations.SlotsTable(r.opts.OutboxTable)).
		Msg("slot recovery off: the slot record cannot be used; run `relay provision`, or grant the relay SELECT, INSERT on the table and USAGE on its sequence")
	r.opts.RecoverSlot = false
	r.stream.NoRecovery()
}

// preflight refuses to run where nothing would ever be streamed: a server
// without logical decoding, or a publication that does not carry the outbox's
// inserts.
func (r *Relay) preflight(ctx context.Context) error {
	var walLevel string
	if err := r.opts.DB.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("read wal_level: %w", err)
	}
	if walLevel != "logical" {
		return fmt.Errorf("postgres has wal_level=%s: set wal_level = logical in postgresql.conf and restart Postgres", walLevel)
	}
	schema, table := migrations.SplitQualified(r.opts.OutboxTable)
	pub, outbox := r.opts.Publication, r.opts.OutboxTable
	var exists, covers, inserts bool
	err := r.opts.DB.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
		EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3),
		coalesce((SELECT pubinsert FROM pg_publication WHERE pubname = $1), false)`,
		pub, schema, table).Scan(&exists, &covers, &inserts)
	switch {
	case err != nil:
		return fmt.Errorf("read publication %s: %w", pub, err)
	case !exists:
		return fmt.Errorf("publication %q does not exist; run `relay provision` or create it: CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')",
			pub, pub, outbox)
	case !covers:
		return fmt.Errorf("publication %q does not include %s: ALTER PUBLICATION %s ADD TABLE %s", pub, outbox, pub, outbox)
	case !inserts:
		return fmt.Errorf("publication %q does not publish inserts: ALTER PUBLICATION %s SET (publish = 'insert')", pub, pub)
	}
	return nil
}

// explain turns an invalidated-slot error from the stream into the full
// recovery message.
func (r *Relay) explain(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55000" {
		if info, rerr := cdc.ReadSlot(ctx, r.opts.DB, r.opts.Slot); rerr == nil && info != nil {
			if cerr := cdc.CheckSlot(info, ""); cerr != nil {
				return cerr
			}
		}
	}
	return err
}

// isFatal reports start errors that retrying cannot fix: authentication
// (class 28), a missing database, a missing privilege, a malformed URL.
func isFatal(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code[:2] == "28" || pgErr.Code == "3D000" || pgErr.Code == "42501"
	}
	var uerr *url.Error
	return errors.As(err, &uerr)
}
