package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

func (m *Main) run(ctx context.Context, args []string) error {
	if err := m.Flags("run", args, nil); err != nil {
		return err
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	a, err := newApp(ctx, c, config.NewLogger(&c.Common, m.Stderr, "sink"))
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}

// App wires the database pool, the NATS connection, the handler, the
// consumer and the sink together.
type App struct {
	cfg  *Config
	log  zerolog.Logger
	pool *pgxpool.Pool
	nc   *nats.Conn
	js   jetstream.JetStream
}

func newApp(ctx context.Context, c *Config, log zerolog.Logger) (*App, error) {
	log.Info().Str("database", config.Redact(c.DatabaseURL)).Strs("nats", c.NATSURLs).
		Str("stream", c.StreamName).Str("consumer", c.Durable()).Str("filter_subject", c.Filter()).
		Str("inbox", c.InboxTable).Str("handler", handlerForLog(c)).Int("concurrency", c.Concurrency).
		Bool("auto_provision", c.AutoProvision).Bool("skip_stale", c.SkipStale).Msg("starting sink")
	pcfg, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	// One connection per worker (each holds its transaction open through the
	// handler), plus room for failure records and readiness pings.
	pcfg.MaxConns = int32(c.Concurrency + 2)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "jetstream-bridge-sink"
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
	return &App{cfg: c, log: log, pool: pool, nc: nc, js: js}, nil
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

// Run provisions (or binds), then consumes until ctx ends.
func (a *App) Run(ctx context.Context) error {
	c := a.cfg
	reg := ops.NewRegistry()
	met := newMetrics(reg)
	var s *sink.Sink
	ready := make(chan struct{}) // closed once s is set
	srv := &ops.Server{Addr: c.HTTPAddr, Registry: reg, Log: a.log, Checks: map[string]ops.Check{
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
		cons, handler, err := a.start(gctx)
		if err != nil || gctx.Err() != nil {
			return err
		}
		s, err = sink.New(sink.Options{
			DB: a.pool, JS: a.js, Consumer: cons, Handler: handler,
			Inbox: c.InboxTable, DLQSubject: c.DLQ(), UseDLQ: c.UseDLQ,
			MaxDeliver: c.MaxDeliver, Backoff: c.Backoff, BatchSize: c.BatchSize, Concurrency: c.Concurrency,
			MaxHeld: c.MaxHeld(), SkipStale: c.SkipStale, ShutdownTimeout: c.ShutdownTimeout,
			Observer: met, Log: a.log,
		})
		if err != nil {
			return err
		}
		close(ready)
		if c.AutoProvision {
			g.Go(func() error { a.watchPending(gctx, cons, met); return nil })
		}
		a.log.Info().Str("consumer", c.Durable()).Msg("consuming")
		return s.Run(gctx)
	})
	return g.Wait()
}

// start provisions (AUTO_PROVISION=true) or binds, and builds the handler.
// Connection trouble is retried until ctx ends; anything else is returned.
func (a *App) start(ctx context.Context) (jetstream.Consumer, sink.Handler, error) {
	var cons jetstream.Consumer
	err := retry(ctx, a.log, "provisioning", func() (err error) {
		if a.cfg.AutoProvision {
			cons, err = a.provision(ctx)
			if err != nil {
				return fmt.Errorf("provision (AUTO_PROVISION=true): %w", err)
			}
			return nil
		}
		cons, err = a.bind(ctx)
		return err
	})
	if err != nil || ctx.Err() != nil {
		return nil, nil, err
	}
	var h sink.Handler
	err = retry(ctx, a.log, "handler lookup", func() (err error) {
		h, err = a.handler(ctx)
		return err
	})
	return cons, h, err
}

// handler builds HANDLER, or a router over ROUTES_FILE.
func (a *App) handler(ctx context.Context) (sink.Handler, error) {
	hs := &sink.Handlers{DB: a.pool, HTTP: sink.HTTPOptions{Secret: a.cfg.WebhookSecret, Timeout: a.cfg.WebhookTimeout}}
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

// bind binds to the existing consumer and checks the inbox tables exist,
// without creating or changing anything (AUTO_PROVISION=false).
func (a *App) bind(ctx context.Context) (jetstream.Consumer, error) {
	c := a.cfg
	cons, err := sink.BindConsumer(ctx, a.js, c.StreamName, c.Durable())
	if errors.Is(err, sink.ErrConsumerMissing) {
		return nil, fmt.Errorf("%w; run `sink provision` or set AUTO_PROVISION=true", err)
	}
	if err != nil {
		return nil, err
	}
	for _, w := range sink.CheckBound(cons.CachedInfo(), c.Filter(), c.MaxDeliver) {
		a.log.Warn().Str("consumer", c.Durable()).Msg("consumer settings: " + w)
	}
	tables := []string{c.InboxTable}
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
	return cons, nil
}

// watchPending updates the pending gauge from consumer info every 10s. Only
// with AUTO_PROVISION=true: consumer info is a JetStream management call.
func (a *App) watchPending(ctx context.Context, cons jetstream.Consumer, met *metrics) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		if err == nil {
			met.pending.Set(float64(info.NumPending))
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

// retry calls f until it succeeds, fails for good, or ctx ends (then nil).
func retry(ctx context.Context, log zerolog.Logger, what string, f func() error) error {
	for backoff := 250 * time.Millisecond; ; backoff = min(backoff*2, 10*time.Second) {
		err := f()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !config.Transient(err) {
			return err
		}
		log.Warn().Err(err).Dur("retry_in", backoff).Msg(what + " failed, retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}
