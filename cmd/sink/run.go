package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
)

func (m *Main) run(ctx context.Context, args []string) error {
	if err := m.Flags("run", args, nil); err != nil {
		return err
	}
	c, err := m.load(true)
	if err != nil {
		return err
	}
	log := config.NewLogger(&c.Common, m.Stderr, "sink")
	if m.Environ == nil && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(softMemoryLimit(c.MaxHeldBytes))
		// The sink's live heap is what it holds, a few MB with small
		// events; with Go's default GOGC=100 it collects many times a
		// second and the collector is about a third of the sink's CPU per
		// event. Under the soft limit above a higher target costs ~15 MB of
		// RSS and saves that CPU, which on a machine shared with Postgres is
		// Postgres's (docs/BENCHMARKS.md, step 4). Near the limit the limit
		// decides, so large events stay bounded (step 8). GOGC in the
		// environment still wins.
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(400)
		}
	}
	tp, err := tracing.Start(ctx, &c.Tracing, "jetstream-bridge-sink", config.ReadBuild().Version, log)
	if err != nil {
		return err
	}
	defer flushTraces(ctx, tp, log)
	a, err := newApp(ctx, c, log)
	if err != nil {
		return err
	}
	defer a.Close()
	a.tracer = tp.Tracer()
	return a.Run(ctx)
}

// softMemoryLimit is the Go heap's soft limit (GOMEMLIMIT) unless the
// environment sets one. An event costs a few times its size while it is
// applied (its body, then the handler's argument and the inbox row's
// payload encoded into a pipeline), and that encoding is garbage as soon
// as it is sent: with Go's default GOGC=100 the heap grows to twice that
// before it is collected, which with events of a megabyte is over a GB at
// CONCURRENCY 64 (docs/BENCHMARKS.md, step 8). Six times what may be held
// lets the garbage be collected before; below it, GOGC decides as usual.
// It is never below 64 MiB: a small MAX_HELD_BYTES would otherwise set a
// limit under what the runtime and the connections need, and the collector
// would run without pause.
func softMemoryLimit(maxHeldBytes int) int64 { return max(6*int64(maxHeldBytes), 64<<20) }

// flushTraces exports the spans still buffered once the sink stopped,
// within a bound: an unreachable collector must not hold the exit.
func flushTraces(ctx context.Context, tp *tracing.Provider, log zerolog.Logger) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := tp.Shutdown(fctx); err != nil {
		log.Warn().Err(err).Msg("spans not exported at shutdown")
	}
}

// App wires the database pool, the NATS connection, the handler, the
// consumer and the sink together.
type App struct {
	cfg  *Config
	log  zerolog.Logger
	pool *pgxpool.Pool
	// dbHost is the server of the pool's newest connection (/readyz db_host).
	dbHost *config.DBHost
	nc     *nats.Conn
	js     jetstream.JetStream
	// tracer is nil when traces are off.
	tracer trace.Tracer
}

func newApp(ctx context.Context, c *Config, log zerolog.Logger) (*App, error) {
	ev := log.Info().Str("database", config.Redact(c.DatabaseURL)).Strs("nats", config.RedactNATSURLs(c.NATSURLs)).
		Str("stream", c.StreamName).Str("consumer", c.Durable()).Str("filter_subject", c.Filter()).
		Str("consumer_mode", c.ConsumerMode).Str("inbox", c.InboxTable).Str("handler", handlerForLog(c)).
		Int("concurrency", c.Concurrency).Bool("auto_provision", c.AutoProvision).Bool("skip_stale", c.SkipStale).
		Str("version", config.ReadBuild().String())
	if c.Push() {
		ev = ev.Str("deliver_subject", c.Deliver())
	}
	ev.Msg("starting sink")
	pcfg, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	// One connection per worker (each holds its transaction open through the
	// handler), plus room for failure records and readiness pings.
	pcfg.MaxConns = int32(c.Concurrency + 2)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "jetstream-bridge-sink"
	dbHost := config.TrackDBHost(pcfg, log)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	nc, err := config.ConnectNATS(ctx, &c.Common, "jetstream-bridge-sink "+c.AppName, log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		pool.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &App{cfg: c, log: log, pool: pool, nc: nc, js: js, dbHost: dbHost}, nil
}

// handlerForLog names the handler without a webhook URL's query string.
func handlerForLog(c *Config) string {
	if c.RoutesFile != "" {
		return "routes:" + c.RoutesFile
	}
	if i := strings.IndexAny(c.Handler, "?#"); i >= 0 {
		return c.Handler[:i] // a webhook's query string may carry a token
	}
	return c.Handler
}

// Close releases connections. Safe to call more than once.
func (a *App) Close() {
	if a.nc != nil {
		a.nc.Close()
	}
	if a.pool != nil {
		a.pool.Close()
	}
}

// Run provisions (AUTO_PROVISION=true), then consumes until ctx ends.
func (a *App) Run(ctx context.Context) error {
	c := a.cfg
	if c.Partitions > 0 {
		return a.runPartitioned(ctx)
	}
	reg := ops.NewRegistry()
	met := newMetrics(reg)
	var s *sink.Sink
	ready := make(chan struct{}) // closed once s is set
	srv := &ops.Server{Addr: c.HTTPAddr, Pprof: c.Pprof, Registry: reg, Log: a.log, Info: map[string]func() string{
		"db_host": a.dbHost.Host,
	}, Checks: map[string]ops.Check{
		"postgres": func(ctx context.Context) error { return a.pool.Ping(ctx) },
		"nats": func(context.Context) error {
			if st := a.nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("nats %s", st)
			}
			return nil
		},
		"consumer": func(context.Context) error {
			select {
			case <-ready:
				return s.Ready()
			default:
				return errors.New("not bound yet")
			}
		},
	}}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error {
		src, handler, err := a.start(gctx)
		if err != nil || gctx.Err() != nil {
			return err
		}
		s, err = sink.New(a.sinkOptions(src, handler, met))
		if err != nil {
			return err
		}
		close(ready)
		if c.AutoProvision {
			g.Go(func() error { a.watchPending(gctx, met); return nil })
		}
		a.log.Info().Str("consumer", c.Durable()).Str("consumer_mode", c.ConsumerMode).Msg("consuming")
		err = s.Run(gctx)
		if errors.Is(err, sink.ErrConsumerMissing) {
			return fmt.Errorf("%w; run `sink provision` or set AUTO_PROVISION=true", err)
		}
		return err
	})
	return g.Wait()
}

// start provisions (AUTO_PROVISION=true) or checks the inbox tables, makes
// the message source, and builds the handler. Connection trouble is retried
// until ctx ends; anything else is returned.
func (a *App) start(ctx context.Context) (sink.Source, sink.Handler, error) {
	var src sink.Source
	err := config.Retry(ctx, a.log, "provisioning", func() (err error) {
		src, err = a.source(ctx)
		return err
	})
	if err != nil || ctx.Err() != nil {
		return nil, nil, err
	}
	var h sink.Handler
	err = config.Retry(ctx, a.log, "handler lookup", func() (err error) {
		h, err = a.handler(ctx)
		return err
	})
	return src, h, err
}

// handler builds HANDLER, or a router over ROUTES_FILE.
func (a *App) handler(ctx context.Context) (sink.Handler, error) {
	hs := &sink.Handlers{DB: a.pool, HTTP: sink.HTTPOptions{Secret: a.cfg.WebhookSecret, Timeout: a.cfg.WebhookTimeout, Tracer: a.tracer, Concurrency: a.cfg.Concurrency}}
	if a.cfg.Handler != "" {
		h, err := hs.Build(ctx, a.cfg.Handler)
		if err != nil {
			return nil, fmt.Errorf("HANDLER: %w", err)
		}
		return h, nil
	}
	r, err := sink.NewRouter(ctx, a.cfg.routes, hs.Build)
	if err != nil {
		return nil, fmt.Errorf("ROUTES_FILE: %w", err)
	}
	return r, nil
}

// source returns where messages come from. With AUTO_PROVISION=true it
// provisions first and binds the pull consumer through the jetstream client.
// With AUTO_PROVISION=false it makes no JetStream API call: it checks the
// inbox tables exist, and consumes without looking the consumer up, so the
// consumer's settings are not checked (`sink status` shows them).
func (a *App) source(ctx context.Context) (sink.Source, error) {
	c := a.cfg
	if c.AutoProvision {
		info, err := a.provision(ctx)
		if err != nil {
			return nil, fmt.Errorf("provision (AUTO_PROVISION=true): %w", err)
		}
		if err := a.checkInbox(ctx); err != nil {
			return nil, err
		}
		if c.Push() {
			// The durable's own deliver subject and group: an existing push
			// durable keeps them (provision.ConsumerSpec.DeliverIsDefault).
			return sink.Push(a.nc, info.Config.DeliverSubject, info.Config.DeliverGroup), nil
		}
		cons, err := sink.BindConsumer(ctx, a.js, c.StreamName, c.Durable())
		if err != nil {
			return nil, err
		}
		return sink.JetStreamPull(cons), nil
	}
	if err := a.checkInbox(ctx); err != nil {
		return nil, err
	}
	var tables []string
	if c.SkipStale {
		tables = append(tables, c.InboxTable+"_positions")
	}
	for _, t := range tables {
		var exists bool
		if err := a.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", t).Scan(&exists); err != nil {
			return nil, fmt.Errorf("check table %s: %w", t, err)
		}
		if !exists {
			return nil, fmt.Errorf("table %s does not exist; run `sink provision` or apply migrations/002_inbox.sql", t)
		}
	}
	a.log.Info().Str("consumer", c.Durable()).
		Msg("AUTO_PROVISION=false: consuming without JetStream API calls; the consumer's settings are not checked (see `sink status`)")
	if c.Push() {
		return sink.Push(a.nc, c.Deliver(), c.Durable()), nil
	}
	return sink.RestrictedPull(a.nc, c.StreamName, c.Durable(), c.Filter()), nil
}

// checkInbox refuses to start on an inbox table the sink cannot write
// (missing columns, NOT NULL columns it leaves empty): every event would
// fail on it, one at a time. The error names the columns and the fix.
func (a *App) checkInbox(ctx context.Context) error {
	rep, err := provision.CheckTable(ctx, a.pool, provision.InboxTable, a.cfg.InboxTable)
	if err != nil {
		return err
	}
	return rep.Err("sink provision")
}

// watchPending updates the pending gauge from consumer info every 10s. Only
// with AUTO_PROVISION=true: consumer info is a JetStream management call.
func (a *App) watchPending(ctx context.Context, met *metrics) {
	c := a.cfg
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := provision.ConsumerInfo(ictx, a.js, c.StreamName, c.Durable(), c.Push())
		cancel()
		if err == nil {
			met.pending.Set(float64(info.NumPending))
			met.ackPending.Set(float64(info.NumAckPending))
			met.redelivered.Set(float64(info.NumRedelivered))
		} else if ctx.Err() == nil {
			a.log.Debug().Err(err).Msg("consumer info failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sinkOptions are the sink's settings for one source: the whole consumer,
// or one partition's (partitions.go adds the fence).
func (a *App) sinkOptions(src sink.Source, h sink.Handler, obs sink.Observer) sink.Options {
	c := a.cfg
	return sink.Options{
		DB: a.pool, JS: a.js, Source: src, Handler: h,
		Inbox: c.InboxTable, DLQSubject: c.DLQ(), UseDLQ: c.UseDLQ,
		MaxDeliver: c.MaxDeliver, Backoff: c.Backoff, BatchSize: c.BatchSize, TxBatch: c.TxBatch, Concurrency: c.Concurrency,
		MaxHeld: c.MaxHeld(), MaxHeldBytes: int64(c.MaxHeldBytes), SkipStale: c.SkipStale, FillGaps: c.Gaps(), AckWait: c.AckWait, ShutdownTimeout: c.ShutdownTimeout,
		Tracer: a.tracer, Observer: obs, Log: a.log,
	}
}
