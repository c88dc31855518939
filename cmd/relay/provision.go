package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func (m *Main) provision(ctx context.Context, args []string) error {
	var narrow, printSQL bool
	if err := m.Flags("provision", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&narrow, "narrow-subjects", false, "replace the stream subject {app}.sync.> of earlier versions by {app}.sync.*")
		fs.BoolVar(&printSQL, "print-sql", false, "print the SQL provisioning would run on the database (an existing outbox table's missing columns first) and change nothing")
	}); err != nil {
		return err
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	if printSQL {
		sql, err := provision.SchemaSQL(ctx, c.DatabaseURL, provision.OutboxTable, c.Names())
		if err != nil {
			return err
		}
		return provision.WriteSQL(m.Stdout, sql)
	}
	r, err := newRelay(ctx, c, config.NewLogger(&c.Common, m.Stderr, "relay"), nil)
	if err != nil {
		return err
	}
	defer r.Close()
	r.narrow = narrow
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
	// A slot the record table knows of is not created here: missing, it was
	// lost (a promoted standby, a dropped slot), and creating it without a
	// recovery would silently skip what was committed meanwhile. The relay
	// recovers it at start (SLOT_RECOVERY=auto) or says what to do.
	recorded, err := relay.SlotRecorded(ctx, r.pool, c.OutboxTable, c.Slot())
	if err != nil {
		return err
	}
	if recorded {
		info, err := cdc.ReadSlot(ctx, r.pool, c.Slot())
		if err != nil {
			return err
		}
		if info == nil {
			r.log.Warn().Str("slot", c.Slot()).Msg("replication slot is missing although it existed: not creating it; the relay recovers it at start (SLOT_RECOVERY=auto)")
			_, err = provision.EnsureStream(ctx, r.js, r.streamSpec(), r.log)
			return err
		}
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

// streamSpec is the relay's stream (provision.RelaySubjects).
func (r *Relay) streamSpec() provision.StreamSpec {
	c := r.cfg
	subjects, fallback, wide := provision.RelaySubjects(c.Subjects())
	if c.Partitions > 0 && len(fallback) > 0 {
		// {app}.sync.{dest}.*: every partition of the destination, which
		// {app}.sync.* does not reach.
		p := envelope.PartitionFilter(fallback[0])
		subjects, fallback = append(subjects, p), []string{p}
	}
	retention, _ := c.Retention() // validated at load
	return provision.StreamSpec{
		Name:       c.StreamName,
		Subjects:   subjects,
		Fallback:   fallback,
		Duplicates: c.DuplicateWindow,
		Replicas:   c.StreamReplicas,
		AllowBatch: c.FastBatch && publish.BatchSupported(r.nc.ConnectedServerVersion()),
		Retention:  retention,
		Wide:       wide,
		Narrow:     r.narrow,
	}
}

// provisionWithRetry provisions at start; connection trouble is retried,
// anything else (permissions, bad names) stops the relay.
func (r *Relay) provisionWithRetry(ctx context.Context) error {
	for wait := backoff.New(250*time.Millisecond, 10*time.Second); ; {
		err := r.provision(ctx)
		if err == nil {
			return r.checkOutboxWithRetry(ctx)
		}
		if ctx.Err() != nil {
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

// checkOutboxWithRetry is checkOutbox through connection trouble (Postgres
// restarting or failing over under a starting relay): retried with backoff
// until ctx ends; a table that does not fit stops the relay.
func (r *Relay) checkOutboxWithRetry(ctx context.Context) error {
	return config.Retry(ctx, r.log, "reading the outbox table's columns", func() error { return r.checkOutbox(ctx) })
}

// checkOutbox refuses to start on an outbox table without the columns the
// relay cannot do without (every row would be dead-lettered), naming them
// and the fix, and warns of what only the apps' inserts would miss.
func (r *Relay) checkOutbox(ctx context.Context) error {
	rep, err := provision.CheckTable(ctx, r.pool, provision.OutboxTable, r.cfg.OutboxTable)
	if err != nil {
		return err
	}
	if err := rep.Err("relay provision"); err != nil {
		return err
	}
	if w := rep.Warning(); w != "" {
		r.log.Warn().Str("table", r.cfg.OutboxTable).Strs("fix", rep.Upgrade).Msg("outbox table " + w + "; `relay provision` adds what is missing")
	}
	return nil
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
