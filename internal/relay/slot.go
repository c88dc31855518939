package relay

import (
	"context"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
)

// guard watches the slot: lost stops the relay (with RecoverSlot the
// stream recovers it: Postgres ends the walsender of an invalidated slot,
// and the reconnect finds it lost); reserve trouble and lag warn.
func (r *Relay) guard(ctx context.Context) error {
	t := time.NewTicker(r.opts.SlotCheck)
	defer t.Stop()
	lastStatus := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		info, err := cdc.ReadSlot(ctx, r.opts.DB, r.opts.Slot)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn().Err(err).Msg("slot check failed")
			}
			continue
		}
		if info == nil {
			if r.opts.RecoverSlot {
				r.log.Error().Str("slot", r.opts.Slot).Msg("replication slot no longer exists; the stream recreates it when it reconnects")
			} else {
				r.log.Error().Str("slot", r.opts.Slot).Msg("replication slot no longer exists")
			}
			continue
		}
		r.obs.Slot(info)
		if info.WALStatus == "lost" {
			if r.opts.RecoverSlot {
				r.log.Error().Str("slot", r.opts.Slot).Msg("replication slot lost; the stream recreates it when it reconnects")
				continue
			}
			return cdc.CheckSlot(info, "")
		}
		if info.WALStatus != lastStatus && (info.WALStatus == "unreserved" || info.WALStatus == "extended") {
			r.log.Warn().Str("slot", info.Name).Str("wal_status", info.WALStatus).Any("safe_wal_size", info.SafeWALSize).
				Msg("replication slot WAL reserve is at risk; the relay is behind or stalled")
		}
		lastStatus = info.WALStatus
		if info.RetainedBytes > r.opts.SlotLagWarn {
			r.log.Warn().Str("slot", info.Name).Int64("retained_wal_bytes", info.RetainedBytes).Int64("lag_bytes", info.LagBytes).
				Msg("replication slot retains a lot of WAL")
		}
	}
}
