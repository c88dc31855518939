package cdc

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// Recovery is one attempt to recreate a missing or lost slot, handed to
// Options.Recover on the session's replication connection before it
// streams.
//
// The order is what makes it exact: Create makes the slot with an exported
// snapshot; Recover reads the outbox through that snapshot (on another
// connection: BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION
// SNAPSHOT) and publishes what the stream may lack, waiting for every ack;
// only when Recover returns does the session send its next command,
// START_REPLICATION from the slot's consistent point. A snapshot exported by
// CREATE_REPLICATION_SLOT stays valid only until the next command on the
// replication connection, and it sees exactly the transactions committed
// before the consistent point, which are exactly those the new slot will
// never stream: nothing falls between the two.
type Recovery struct {
	Reason string        // missing (at start, or on another server: a promoted standby), dropped (gone where it streamed), lost (invalidated)
	OldLSN pglogrepl.LSN // the last position confirmed on the old slot, 0 when unknown
	Host   string        // the server of the replication connection

	conn    *pgconn.PgConn
	slot    string
	created *CreatedSlot
}

// Create drops the slot first when dropFirst (it is there, invalidated or
// left by an interrupted recovery), then creates it with an exported
// snapshot. ErrSlotExists means it is there already.
func (rec *Recovery) Create(ctx context.Context, dropFirst bool) (*CreatedSlot, error) {
	if dropFirst {
		if err := DropSlot(ctx, rec.conn, rec.slot); err != nil {
			return nil, err
		}
	}
	c, err := CreateSlot(ctx, rec.conn, rec.slot, true)
	if err != nil {
		return nil, err
	}
	rec.created = c
	return c, nil
}

// NoRecovery turns Options.Recover off: a missing or lost slot stops the
// stream. Call it before Run.
func (s *Stream) NoRecovery() { s.opts.Recover = nil }

// recover runs Options.Recover on conn. Events already handed over keep
// their acks: the recovery first waits (up to DrainTimeout) until every one
// is done, so the stream's newest stored event, which decides what is
// republished, is final. Then the tracker restarts at the new slot's
// consistent point: positions reached on the old slot mean nothing on the
// new one, and may even lie beyond WAL it has still to stream (a promoted
// standby that never received the old primary's last records); confirming
// one of them would skip events there.
func (s *Stream) recover(ctx context.Context, conn *pgconn.PgConn) error {
	s.setState(State{Reason: "recovering replication slot (" + s.recovery + ")"})
	deadline := time.Now().Add(s.opts.DrainTimeout)
	for !s.tracker.Idle() {
		if time.Now().After(deadline) {
			return fmt.Errorf("recover slot %q: %d transactions handed over are not yet acknowledged", s.opts.Slot, s.tracker.Open())
		}
		if !sleep(ctx, 10*time.Millisecond) {
			return ctx.Err()
		}
	}
	rec := &Recovery{Reason: s.recovery, OldLSN: s.tracker.Safe(), Host: s.State().Host, conn: conn, slot: s.opts.Slot}
	if err := s.opts.Recover(ctx, rec); err != nil {
		if rec.created != nil {
			// Half a recovery must not look like a whole one: without the
			// slot the next attempt recovers again.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if derr := DropSlot(dctx, conn, s.opts.Slot); derr != nil {
				return fmt.Errorf("recover slot %q: %w (and the slot it created could not be dropped: %v; drop it by hand before the relay starts again)", s.opts.Slot, err, derr)
			}
		}
		return fmt.Errorf("recover slot %q: %w", s.opts.Slot, err)
	}
	if rec.created != nil {
		s.tracker.Rebase(rec.created.LSN)
	}
	s.recovery = ""
	return nil
}
