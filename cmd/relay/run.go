package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
	"github.com/prometheus/client_golang/prometheus"
)

func (m *Main) run(ctx context.Context, args []string) error {
	if err := m.Flags("run", args, nil); err != nil {
		return err
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	log := config.NewLogger(&c.Common, m.Stderr, "relay")
	tp, err := tracing.Start(ctx, &c.Tracing, "jetstream-bridge-relay", config.ReadBuild().Version, log)
	if err != nil {
		return err
	}
	defer flushTraces(ctx, tp, log)
	r, err := newRelay(ctx, c, log, tp.Tracer())
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Run(ctx)
}

// flushTraces exports the spans still buffered once the relay stopped,
// within a bound: an unreachable collector must not hold the exit.
func flushTraces(ctx context.Context, tp *tracing.Provider, log zerolog.Logger) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(fctx); err != nil {
		log.Warn().Err(err).Msg("spans not exported at shutdown")
	}
}

// Relay is the relay's wiring: its connections, the relay itself
// (internal/relay) and its metrics and ops server.
type Relay struct {
	cfg   *Config
	log   zerolog.Logger
	pool  *pgxpool.Pool
	nc    *nats.Conn
	js    jetstream.JetStream
	relay *relay.Relay
	reg   *prometheus.Registry

	narrow bool // relay provision --narrow-subjects
}

// ackTimeout is how long the publisher waits for one JetStream ack.
const ackTimeout = 10 * time.Second

// newRelay connects and builds the relay; tracer nil is traces off.
func newRelay(ctx context.Context, c *Config, log zerolog.Logger, tracer trace.Tracer) (*Relay, error) {
	log.Info().Str("database", config.Redact(c.DatabaseURL)).Strs("nats", config.RedactNATSURLs(c.NATSURLs)).
		Str("slot", c.Slot()).Str("table", c.OutboxTable).Str("stream", c.StreamName).
		Bool("auto_provision", c.AutoProvision).Str("version", config.ReadBuild().String()).Msg("starting relay")
	pcfg, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = 2
	pcfg.ConnConfig.RuntimeParams["application_name"] = "jetstream-bridge-relay"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	nc, err := config.ConnectNATS(ctx, &c.Common, "jetstream-bridge-relay "+c.AppName, log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	js, err := jetstream.New(nc, publish.JetStreamOptions(c.MaxInflight, ackTimeout)...)
	if err != nil {
		nc.Close()
		pool.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	r := &Relay{cfg: c, log: log, pool: pool, nc: nc, js: js, reg: ops.NewRegistry()}
	opts := relay.Options{
		DB: pool, ConnString: c.DatabaseURL, NC: nc, JS: js,
		Slot: c.Slot(), Publication: c.Publication, OutboxTable: c.OutboxTable,
		Producer: c.AppName, Subjects: c.Subjects(), MaxPayload: int(nc.MaxPayload()), ObjectPayloadsOnly: c.ObjectPayloadsOnly(), Partitions: c.Partitions,
		Stream: c.StreamName, StreamSubjects: r.streamSpec().Subjects, Manage: c.AutoProvision,
		UseDLQ: c.UseDLQ, FastBatch: c.FastBatch, MaxInflight: c.MaxInflight, MaxInflightBytes: c.MaxInflightBytes,
		AckTimeout: ackTimeout, NoStreamTimeout: c.NoStreamTimeout,
		StatusInterval: c.StatusInterval, ReplTimeout: c.ReplTimeout, ShutdownTimeout: c.ShutdownTimeout,
		BatchLinger: c.BatchLinger, SlotCheck: c.SlotCheck, SlotLagWarn: c.SlotLagWarn,
		OutboxRetention: c.OutboxRetention, PruneInterval: c.PruneInterval,
		RecoverSlot: c.SlotRecovery == "auto", RecoveryMargin: c.RecoveryMargin,
		Fence:  relay.FenceMode(c.SyncStandbyFence),
		Tracer: tracer, Log: log,
	}
	if c.AutoProvision {
		opts.Provision = r.provisionWithRetry
	}
	m := newMetrics(r.reg, c.Slot())
	opts.Observer = m
	r.relay = relay.New(opts)
	m.register(r.reg, r.relay)
	return r, nil
}

// Close releases connections. Safe to call more than once.
func (r *Relay) Close() {
	if r.nc != nil {
		r.nc.Close()
	}
	if r.pool != nil {
		r.pool.Close()
	}
}

// Run serves the ops endpoints beside the relay until ctx ends (then the
// relay drains, confirms and Run returns nil) or either fails.
func (r *Relay) Run(ctx context.Context) error {
	srv := &ops.Server{Addr: r.cfg.HTTPAddr, Pprof: r.cfg.Pprof, Registry: r.reg, Log: r.log, Info: map[string]func() string{
		// The replication connection's server: the primary the relay follows.
		"db_host": func() string { return r.relay.State().Host },
	}, Checks: map[string]ops.Check{
		"replication": func(context.Context) error {
			if st := r.relay.State(); !st.Replicating {
				return errors.New(st.Reason)
			}
			return nil
		},
		// Events held long at the sync fence: the synchronous standbys do
		// not confirm (writers with synchronous_commit wait as well).
		"sync_fence": func(context.Context) error {
			if n, age := r.relay.FenceHeld(); age > 10*time.Second {
				return fmt.Errorf("%d events held for %s waiting for the synchronous standbys to confirm", n, age.Round(time.Second))
			}
			return nil
		},
		"nats": func(context.Context) error {
			if s := r.nc.Status(); s != nats.CONNECTED {
				return fmt.Errorf("nats %s", s)
			}
			return nil
		},
	}}
	if !r.cfg.AutoProvision {
		// With AUTO_PROVISION the check follows provisioning (provisionWithRetry).
		if err := r.checkOutboxWithRetry(ctx); err != nil || ctx.Err() != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) }) // nil once gctx ends
	g.Go(func() error {
		if err := r.relay.Run(gctx); err != nil {
			return err
		}
		// Stopped by ctx, or by the ops server failing (whose error Wait returns).
		return nil
	})
	return g.Wait()
}
