package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func (m *Main) provision(ctx context.Context, args []string) error {
	if err := m.Flags("provision", args, nil); err != nil {
		return err
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	r, err := newRelay(ctx, c, config.NewLogger(&c.Common, m.Stderr, "relay"))
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.provision(ctx); err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "provisioned: table %s, publication %s, slot %s, stream %s\n",
		c.OutboxTable, c.Publication, c.Slot(), c.StreamName)
	return nil
}

// provision applies the outbox schema and creates the slot and the stream.
// The order matters: the publication must exist before the slot, or
// decoding would start before the publication is visible.
func (r *Relay) provision(ctx context.Context) error {
	c := r.cfg
	if err := provision.Outbox(ctx, c.DatabaseURL, c.Names()); err != nil {
		return err
	}
	created, err := provision.CreateSlot(ctx, c.DatabaseURL, c.Slot())
	if err != nil {
		return err
	}
	if created {
		r.log.Info().Str("slot", c.Slot()).Msg("replication slot created")
		r.warnOlderRows(ctx)
	}
	_, err = provision.EnsureStream(ctx, r.js, r.streamSpec(), r.log)
	return err
}

func (r *Relay) streamSpec() provision.StreamSpec {
	c := r.cfg
	s := c.Subjects()
	prefix := ""
	if c.EnvName != "" {
		prefix = c.EnvName + "."
	}
	fallback := s.Publish("")
	if c.Partitions > 0 {
		fallback = envelope.PartitionFilter(fallback) // {app}.sync.{dest}.*: every partition, nothing else
	}
	return provision.StreamSpec{
		Name:       c.StreamName,
		Subjects:   []string{prefix + c.AppName + ".sync.>", s.DLQ()},
		Fallback:   []string{fallback},
		Duplicates: c.DuplicateWindow,
		Replicas:   c.StreamReplicas,
		AllowBatch: c.FastBatch && publish.BatchSupported(r.nc.ConnectedServerVersion()),
	}
}

// provisionWithRetry provisions at start; connection trouble is retried,
// anything else (permissions, bad names) stops the relay.
func (r *Relay) provisionWithRetry(ctx context.Context) error {
	for wait := backoff.New(250*time.Millisecond, 10*time.Second); ; {
		err := r.provision(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if !config.Transient(err) {
			return fmt.Errorf("provision (AUTO_PROVISION=true): %w", err)
		}
		r.log.Warn().Err(err).Dur("retry_in", wait.Delay()).Msg("provisioning failed, retrying")
		if !wait.Wait(ctx) {
			return nil
		}
	}
}

// warnOlderRows tells the operator about outbox rows a new slot will never
// stream: they were committed before it existed.
func (r *Relay) warnOlderRows(ctx context.Context) {
	table, _ := migrations.QuoteQualified(r.cfg.OutboxTable)
	var n int64
	var oldest time.Time
	if err := r.pool.QueryRow(ctx, "SELECT count(*), coalesce(min(occurred_at), now()) FROM "+table).Scan(&n, &oldest); err != nil || n == 0 {
		return
	}
	r.log.Warn().Int64("rows", n).Time("oldest", oldest).Str("slot", r.cfg.Slot()).
		Msg("the outbox holds rows committed before this replication slot existed; they are not streamed. " +
			"If they were never published (or the slot was recreated after being lost), run: relay backfill --since <time>")
}
