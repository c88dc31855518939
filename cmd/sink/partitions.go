package main

// PARTITIONS=N: one durable consumer per partition ({durable}-p{N}, filter
// {filter}.{N}), each consumed by the one sink process that owns the
// partition (internal/sink/partition.go).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// partitionSpec is the consumer of partition p.
func (c *Config) partitionSpec(p int) provision.ConsumerSpec {
	spec := c.consumerSpec()
	spec.Durable = sink.PartitionDurable(c.Durable(), p)
	spec.Filter = envelope.PartitionSubject(c.Filter(), p)
	return spec
}

// provisionPartitions applies the inbox and ownership schemas, makes the
// stream cover every partition ({filter}.*) and the DLQ subject, and creates
// or updates each partition's consumer.
func (a *App) provisionPartitions(ctx context.Context) error {
	c := a.cfg
	if err := provision.Inbox(ctx, c.DatabaseURL, c.Names()); err != nil {
		return err
	}
	if err := provision.Partitions(ctx, c.DatabaseURL, c.Names()); err != nil {
		return err
	}
	retention, _ := c.Retention() // validated at load
	if _, err := provision.EnsureStream(ctx, a.js, provision.StreamSpec{
		Name:      c.StreamName,
		Subjects:  []string{envelope.PartitionFilter(c.Filter()), c.DLQ()},
		Replicas:  c.StreamReplicas,
		Retention: retention,
	}, a.log); err != nil {
		return err
	}
	for p := range c.Partitions {
		if _, err := provision.EnsureConsumer(ctx, a.js, c.partitionSpec(p), a.log); err != nil {
			return fmt.Errorf("partition %d: %w", p, err)
		}
	}
	return nil
}

// partitionMetrics are the per-partition collectors.
type partitionMetrics struct {
	owned      prometheus.Gauge
	ownedBy    *prometheus.GaugeVec
	pending    *prometheus.GaugeVec
	ackPending *prometheus.GaugeVec
}

func newPartitionMetrics(reg *prometheus.Registry) *partitionMetrics {
	m := &partitionMetrics{
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetstream_bridge_sink_partitions_owned",
			Help: "Partitions this process owns (PARTITIONS); 0 is healthy for a process with no share yet."}),
		ownedBy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetstream_bridge_sink_partition_owned",
			Help: "1 for each partition this process owns, 0 for one it gave up (PARTITIONS)."}, []string{"partition"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetstream_bridge_sink_partition_pending",
			Help: "Messages of an owned partition not yet delivered (consumer info every 10s; AUTO_PROVISION=true only)."}, []string{"partition"}),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetstream_bridge_sink_partition_ack_pending",
			Help: "Messages of an owned partition delivered and not yet acknowledged (consumer info every 10s; AUTO_PROVISION=true only)."}, []string{"partition"}),
	}
	reg.MustRegister(m.owned, m.ownedBy, m.pending, m.ackPending)
	return m
}

// Owned implements sink.PartitionObserver.
func (m *partitionMetrics) Owned(ps []int) {
	m.owned.Set(float64(len(ps)))
	m.ownedBy.Reset()
	for _, p := range ps {
		m.ownedBy.WithLabelValues(strconv.Itoa(p)).Set(1)
	}
}

// runPartitioned provisions (AUTO_PROVISION=true), then takes part in the
// partitioned group until ctx ends and its partitions are handed over.
func (a *App) runPartitioned(ctx context.Context) error {
	c := a.cfg
	reg := ops.NewRegistry()
	met := newMetrics(reg)
	pmet := newPartitionMetrics(reg)
	srv := &ops.Server{Addr: c.HTTPAddr, Pprof: c.Pprof, Registry: reg, Log: a.log, Checks: map[string]ops.Check{
		"postgres": func(ctx context.Context) error { return a.pool.Ping(ctx) },
		"nats": func(context.Context) error {
			if st := a.nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("nats %s", st)
			}
			return nil
		},
		// A member that owns no partition (more processes than partitions,
		// or waiting for its share) is ready: it takes over when one frees.
	}}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error {
		err := config.Retry(gctx, a.log, "provisioning", func() error {
			if c.AutoProvision {
				if err := a.provisionPartitions(gctx); err != nil {
					return fmt.Errorf("provision (AUTO_PROVISION=true): %w", err)
				}
				return nil
			}
			return a.checkPartitionTables(gctx)
		})
		if err != nil || gctx.Err() != nil {
			return err
		}
		var h sink.Handler
		if err := config.Retry(gctx, a.log, "handler lookup", func() (err error) {
			h, err = a.handler(gctx)
			return err
		}); err != nil || gctx.Err() != nil {
			return err
		}
		// Coordination has a pool of its own: a busy apply pool must not
		// delay the lease renewals.
		pcfg, err := pgxpool.ParseConfig(c.DatabaseURL)
		if err != nil {
			return fmt.Errorf("parse DATABASE_URL: %w", err)
		}
		pcfg.MaxConns = 2
		pcfg.ConnConfig.RuntimeParams["application_name"] = "jetstream-bridge-sink-partitions"
		coord, err := pgxpool.NewWithConfig(gctx, pcfg)
		if err != nil {
			return fmt.Errorf("open coordination pool: %w", err)
		}
		defer coord.Close()
		part, members, _ := migrations.PartitionTables(c.InboxTable) // validated
		pc, err := sink.NewPartitioned(sink.PartitionedOptions{
			DB: coord, Tables: sink.PartitionTables{Partitions: part, Members: members},
			Durable: c.Durable(), Partitions: c.Partitions, AckWait: c.AckWait, Lease: c.PartitionLease,
			New: func(p int, f *sink.Fence) (*sink.Sink, error) {
				src, err := a.partitionSource(gctx, p)
				if err != nil {
					return nil, err
				}
				o := a.sinkOptions(src, h, met)
				o.Fence, o.Partitions, o.DrainTimeout = f, c.Partitions, c.ShutdownTimeout
				o.Log = a.log.With().Int("partition", p).Logger()
				return sink.New(o)
			},
			Settled:  a.partitionSettled,
			Quiet:    a.partitionQuiet,
			Observer: pmet,
			Log:      a.log,
		})
		if err != nil {
			return err
		}
		if c.AutoProvision {
			g.Go(func() error { a.watchPartitions(gctx, pc, pmet); return nil })
		}
		// The group outlives gctx: on SIGTERM it hands its partitions over
		// (drained, acked, released) before returning.
		err = pc.Run(gctx)
		if errors.Is(err, sink.ErrConsumerMissing) {
			return fmt.Errorf("%w; run `sink provision` or set AUTO_PROVISION=true", err)
		}
		return err
	})
	return g.Wait()
}

// partitionSource binds partition p's consumer.
func (a *App) partitionSource(ctx context.Context, p int) (sink.Source, error) {
	c := a.cfg
	durable := sink.PartitionDurable(c.Durable(), p)
	if !c.AutoProvision {
		return sink.RestrictedPull(a.nc, c.StreamName, durable, envelope.PartitionSubject(c.Filter(), p)), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := sink.BindConsumer(ctx, a.js, c.StreamName, durable)
	if err != nil {
		return nil, err
	}
	return sink.JetStreamPull(cons), nil
}

// partitionSettled reports whether partition p's consumer has nothing
// delivered and unacknowledged, waiting up to ctx for acks in flight to
// land. Without AUTO_PROVISION (no consumer info) it trusts the drain.
func (a *App) partitionSettled(ctx context.Context, p int) bool {
	c := a.cfg
	if !c.AutoProvision {
		return true
	}
	for {
		info, err := provision.ConsumerInfo(ctx, a.js, c.StreamName, sink.PartitionDurable(c.Durable(), p), false)
		if err == nil && info.NumAckPending == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// partitionQuiet returns how long until every message delivered on
// partition p's consumer and not acknowledged is due for redelivery: its
// last delivery plus ACK_WAIT plus a margin, when anything awaits an ack.
// Without AUTO_PROVISION (no consumer info) it returns 0: the lease and
// ACK_WAIT rule alone applies.
func (a *App) partitionQuiet(ctx context.Context, p int) time.Duration {
	c := a.cfg
	if !c.AutoProvision {
		return 0
	}
	info, err := provision.ConsumerInfo(ctx, a.js, c.StreamName, sink.PartitionDurable(c.Durable(), p), false)
	switch {
	case err != nil:
		return c.AckWait // unknown: assume the worst
	case info.NumAckPending == 0 || info.Delivered.Last == nil:
		return 0
	}
	return time.Until(info.Delivered.Last.Add(c.AckWait + 2*time.Second))
}

// checkPartitionTables checks, with AUTO_PROVISION=false, that the inbox and
// ownership tables exist.
func (a *App) checkPartitionTables(ctx context.Context) error {
	c := a.cfg
	part, members, _ := migrations.PartitionTables(c.InboxTable)
	for _, t := range []string{c.InboxTable, part, members} {
		var exists bool
		if err := a.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", t).Scan(&exists); err != nil {
			return fmt.Errorf("check table %s: %w", t, err)
		}
		if !exists {
			return fmt.Errorf("table %s does not exist; run `sink provision` or apply migrations/002_inbox.sql and 003_partitions.sql", t)
		}
	}
	return nil
}

// watchPartitions updates the per-partition gauges of the owned partitions
// from consumer info every 10s.
func (a *App) watchPartitions(ctx context.Context, pc *sink.Partitioned, m *partitionMetrics) {
	c := a.cfg
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		m.pending.Reset()
		m.ackPending.Reset()
		for _, p := range pc.Owned() {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := provision.ConsumerInfo(ictx, a.js, c.StreamName, sink.PartitionDurable(c.Durable(), p), false)
			cancel()
			if err != nil {
				continue
			}
			l := strconv.Itoa(p)
			m.pending.WithLabelValues(l).Set(float64(info.NumPending))
			m.ackPending.WithLabelValues(l).Set(float64(info.NumAckPending))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PartitionState is one partition in `sink status`.
type PartitionState struct {
	Partition     int    `json:"partition"`
	Consumer      string `json:"consumer"`
	Owner         string `json:"owner"` // "" when free
	Epoch         int64  `json:"epoch"`
	OwnerAlive    bool   `json:"owner_alive"`
	NumPending    uint64 `json:"num_pending"`
	NumAckPending int    `json:"num_ack_pending"`
	// LagSeconds is how long ago the partition's ack floor last moved, when
	// it has messages waiting; 0 when it has none.
	LagSeconds float64 `json:"lag_seconds"`
	Error      string  `json:"error,omitempty"`
}

// collectPartitions fills st.Partitions and st.Members.
func collectPartitions(ctx context.Context, c *Config, js jetstream.JetStream, conn *pgx.Conn, st *Status) {
	part, members, _ := migrations.PartitionTables(c.InboxTable)
	owners := map[int]PartitionState{}
	rows, err := conn.Query(ctx, `SELECT p.partition, p.owner, p.epoch, coalesce(m.lease_until > now(), false)
		FROM `+part+` p LEFT JOIN `+members+` m ON m.durable = p.durable AND m.member = p.owner
		WHERE p.durable = $1`, c.Durable())
	if err == nil {
		for rows.Next() {
			var ps PartitionState
			if err = rows.Scan(&ps.Partition, &ps.Owner, &ps.Epoch, &ps.OwnerAlive); err != nil {
				break
			}
			owners[ps.Partition] = ps
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		st.DatabaseError = "partitions: " + err.Error()
	}
	if ms, err := conn.Query(ctx, `SELECT member FROM `+members+` WHERE durable = $1 AND lease_until > now() ORDER BY member`, c.Durable()); err == nil {
		st.Members, _ = pgx.CollectRows(ms, pgx.RowTo[string])
	}
	now := time.Now()
	for p := range c.Partitions {
		ps := owners[p]
		ps.Partition, ps.Consumer = p, sink.PartitionDurable(c.Durable(), p)
		if i, err := provision.ConsumerInfo(ctx, js, c.StreamName, ps.Consumer, false); err != nil {
			ps.Error = err.Error()
			if st.ConsumerError == "" {
				st.ConsumerError = fmt.Sprintf("partition %d: %v", p, err)
			}
		} else {
			ps.NumPending, ps.NumAckPending = i.NumPending, i.NumAckPending
			if (i.NumPending > 0 || i.NumAckPending > 0) && i.AckFloor.Last != nil {
				ps.LagSeconds = now.Sub(*i.AckFloor.Last).Seconds()
			}
		}
		st.Partitions = append(st.Partitions, ps)
	}
}

func printPartitions(w io.Writer, st *Status) {
	fmt.Fprintf(w, "members:       %d alive %v\n", len(st.Members), st.Members)
	fmt.Fprintf(w, "partitions:    %-4s %-28s %-36s %6s %10s %10s %8s\n", "#", "consumer", "owner", "epoch", "pending", "ack_pend", "lag_s")
	for _, ps := range st.Partitions {
		owner := ps.Owner
		switch {
		case owner == "":
			owner = "(free)"
		case !ps.OwnerAlive:
			owner += " (lease expired)"
		}
		fmt.Fprintf(w, "               %-4d %-28s %-36s %6d %10d %10d %8.1f", ps.Partition, ps.Consumer, owner, ps.Epoch, ps.NumPending, ps.NumAckPending, ps.LagSeconds)
		if ps.Error != "" {
			fmt.Fprintf(w, " ERROR %s", ps.Error)
		}
		fmt.Fprintln(w)
	}
}
