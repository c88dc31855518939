package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Names of everything the bench creates. The relay runs as app bench_src
// publishing to bench_dst; the sink runs as bench_dst consuming from bench_src.
const (
	appSrc      = "bench_src"
	appDst      = "bench_dst"
	streamName  = "jsb-bench"
	subject     = appSrc + ".sync." + appDst
	durableName = appDst + "-workers"
	outboxTable = `public.jetstream_outbox_events`
	inboxTable  = `public.jetstream_inbox_events`
	pollTable   = `bench.poll_outbox`
)

// bench is one run: the environment it started and what it measured.
type bench struct {
	opts *Options
	out  io.Writer

	dir            string // temporary: binaries, Postgres, JetStream store, logs
	pg             *localenv.Postgres
	natsProc       *proc // the JetStream server; nil with --nats-url
	srcURL, dstURL string
	natsURL        string
	src, dst       *pgxpool.Pool
	nc             *nats.Conn
	js             jetstream.JetStream
	relayBin       string
	sinkBin        string
	slot           string
	external       struct{ outbox, inbox bool } // objects the bench created in a given database
	pgVersion      string

	mu    sync.Mutex
	procs []*proc // every process started, for cleanup and log tails
	nproc int

	runID  uint32        // random prefix of this run's event ids
	seq    atomic.Uint64 // next event sequence number (unique within the run)
	report report
	failed bool
}

// setup builds the binaries, starts (or connects to) Postgres and NATS and
// applies the schemas.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.dir, err = localenv.NewWorkDir("jsb-bench-"); err != nil {
		return err
	}
	if b.opts.Profile != "" {
		if err := os.MkdirAll(b.opts.Profile, 0o755); err != nil {
			return fmt.Errorf("create profile directory: %w", err)
		}
	}
	var id [4]byte
	rand.Read(id[:])
	b.runID = binary.BigEndian.Uint32(id[:])
	b.slot = fmt.Sprintf("jsb_bench_%d", os.Getpid())

	fmt.Fprintln(b.out, "JetStream Bridge benchmark: setting up (build relay and sink, start Postgres and JetStream) ...")
	var wg sync.WaitGroup
	var buildErr, serverErr error
	wg.Go(func() { buildErr = b.binaries(ctx) })
	wg.Go(func() { serverErr = b.startServers(ctx) })
	wg.Wait()
	if err := errors.Join(buildErr, serverErr); err != nil {
		return err
	}
	if err := b.pin(); err != nil {
		return err
	}
	if err := b.connect(ctx); err != nil {
		return err
	}
	return b.applySchemas(ctx)
}

// binaries builds relay and sink into the temporary directory, or takes them
// from --bin-dir. With --profile they get a pprof listener through a build
// overlay (the sources are not changed).
func (b *bench) binaries(ctx context.Context) error {
	if b.opts.BinDir != "" && b.opts.Profile == "" {
		var err error
		if b.relayBin, b.sinkBin, err = localenv.LookBinaries(b.opts.BinDir); err != nil {
			return fmt.Errorf("--bin-dir %s: %w", b.opts.BinDir, err)
		}
		return nil
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	out := filepath.Join(b.dir, "bin") + string(filepath.Separator)
	args := []string{"build", "-o", out}
	if b.opts.Profile != "" {
		overlay, err := writePprofOverlay(b.dir, root)
		if err != nil {
			return err
		}
		args = append(args, "-overlay", overlay)
	}
	args = append(args, "./cmd/relay", "./cmd/sink")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	b.relayBin, b.sinkBin = filepath.Join(out, "relay"), filepath.Join(out, "sink")
	return nil
}

// pprofOverlay is added to package main of relay and sink with --profile: a
// net/http/pprof listener on JSB_BENCH_PPROF_ADDR. Neither binary has a
// profiling hook of its own.
const pprofOverlay = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

func init() {
	if addr := os.Getenv("JSB_BENCH_PPROF_ADDR"); addr != "" {
		runtime.MemProfileRate = 64 << 10
		go http.ListenAndServe(addr, nil)
	}
}
`

func writePprofOverlay(dir, root string) (string, error) {
	src := filepath.Join(dir, "zz_bench_pprof.go")
	if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
		return "", fmt.Errorf("write pprof overlay: %w", err)
	}
	overlay := fmt.Sprintf(`{"Replace":{%q:%q,%q:%q}}`,
		filepath.Join(root, "cmd", "relay", "zz_bench_pprof.go"), src,
		filepath.Join(root, "cmd", "sink", "zz_bench_pprof.go"), src)
	path := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(path, []byte(overlay), 0o644); err != nil {
		return "", fmt.Errorf("write overlay: %w", err)
	}
	return path, nil
}

// moduleRoot is the root of the source tree to build relay and sink in.
func moduleRoot() (string, error) {
	root, err := localenv.SourceRoot()
	if errors.Is(err, localenv.ErrNoSourceTree) {
		return "", errors.New("cannot build relay and sink: run the bench inside the repository (go run ./cmd/bench), " +
			"or pass --bin-dir DIR with relay and sink in it (make build puts them in bin/)")
	}
	return root, err
}

// pgSettings are the local cluster's settings beyond localenv's defaults.
// With --fsync (the default) commits are durable as in production; the
// larger max_wal_size keeps checkpoints out of the measurement windows.
func (b *bench) pgSettings() map[string]string {
	s := map[string]string{"max_wal_size": "4GB", "checkpoint_timeout": "30min"}
	if b.opts.Fsync {
		s["fsync"] = "on"
		s["full_page_writes"] = "on"
	}
	return s
}

// startServers starts the local Postgres cluster and JetStream server
// unless URLs were given.
func (b *bench) startServers(ctx context.Context) error {
	var err error
	if b.opts.NATSURL != "" {
		b.natsURL = b.opts.NATSURL
	} else if err := b.startNATS(ctx); err != nil {
		return err
	}
	if b.opts.DatabaseURL != "" {
		b.srcURL, b.dstURL = b.opts.DatabaseURL, b.opts.DatabaseURL
		return nil
	}
	pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{Dir: filepath.Join(b.dir, "pg"), Settings: b.pgSettings()})
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	b.pg = pg
	for _, db := range []string{appSrc, appDst} {
		if err := pg.CreateDatabase(ctx, db); err != nil {
			return err
		}
	}
	b.srcURL, b.dstURL = pg.URL(appSrc), pg.URL(appDst)
	return nil
}

func (b *bench) connect(ctx context.Context) error {
	var err error
	for _, p := range []struct {
		url  string
		pool **pgxpool.Pool
	}{{b.srcURL, &b.src}, {b.dstURL, &b.dst}} {
		if *p.pool, err = localenv.OpenPool(ctx, p.url, int32(max(b.opts.Writers, 4)+4), map[string]string{
			"application_name": "jetstream-bridge-bench",
			// Text timestamps as pgoutput renders them for the relay (the polling baseline reads them).
			"TimeZone":  "UTC",
			"DateStyle": "ISO, YMD",
		}); err != nil {
			return err
		}
	}
	var walLevel string
	if err := b.src.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version')").Scan(&walLevel, &b.pgVersion); err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	if walLevel != "logical" {
		return fmt.Errorf("postgres has wal_level=%s: the relay needs wal_level=logical", walLevel)
	}
	b.nc, err = nats.Connect(b.natsURL, nats.Name("jetstream-bridge-bench"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", b.natsURL, err)
	}
	b.js, err = jetstream.New(b.nc, jetstream.WithPublishAsyncMaxPending(b.opts.MaxInflight*2+16),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// benchSrcSQL is the polling baseline's outbox: the bridge's columns plus
// published_at, with the partial index the classic design polls through.
const benchSrcSQL = `
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.poll_outbox (
    id            bigserial   PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    resource_type text        NOT NULL,
    resource_id   text,
    event_type    text        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}',
    headers       jsonb       NOT NULL DEFAULT '{}',
    subject       text,
    destination   text,
    trace_id      text,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX IF NOT EXISTS poll_outbox_unpublished ON bench.poll_outbox (id) WHERE published_at IS NULL;
`

// benchDstSQL holds the sink's handlers: a no-op procedure and a function
// upserting the event's payload into a table keyed by resource_id (step 4),
// and one that records when it applied an event (step 5).
const benchDstSQL = `
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.applied (event_id text NOT NULL, applied_at timestamptz NOT NULL);
CREATE OR REPLACE PROCEDURE bench.noop(e jsonb) LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
CREATE OR REPLACE PROCEDURE bench.record(e jsonb) LANGUAGE sql AS $$
    INSERT INTO bench.applied (event_id, applied_at) VALUES (e->>'event_id', clock_timestamp())
$$;
CREATE TABLE IF NOT EXISTS bench.resources (
    resource_id text PRIMARY KEY, payload jsonb NOT NULL, event_id text NOT NULL, updated_at timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION bench.upsert(e jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bench.resources AS r (resource_id, payload, event_id, updated_at)
    VALUES (e->>'resource_id', e->'payload', e->>'event_id', now())
    ON CONFLICT (resource_id) DO UPDATE
        SET payload = EXCLUDED.payload, event_id = EXCLUDED.event_id, updated_at = EXCLUDED.updated_at
$$;
`

// applySchemas creates the outbox (as `relay provision` would) and the
// polling table in the source database, and the inbox and handlers in the
// destination database. In a given database it refuses to touch outbox or
// inbox tables that hold rows.
func (b *bench) applySchemas(ctx context.Context) error {
	if b.opts.DatabaseURL != "" {
		for _, t := range []struct {
			name    string
			created *bool
		}{{outboxTable, &b.external.outbox}, {inboxTable, &b.external.inbox}} {
			var exists bool
			if err := b.src.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", t.name).Scan(&exists); err != nil {
				return err
			}
			if !exists {
				*t.created = true
				continue
			}
			var rows int64
			if err := b.src.QueryRow(ctx, "SELECT count(*) FROM "+t.name).Scan(&rows); err != nil {
				return err
			}
			if rows > 0 {
				return fmt.Errorf("--database-url: %s holds %d rows; the bench truncates it: use a scratch database", t.name, rows)
			}
		}
	}
	outbox, inbox, err := localenv.BridgeSchemas()
	if err != nil {
		return err
	}
	if err := localenv.ApplySQL(ctx, b.src, outbox, benchSrcSQL); err != nil {
		return fmt.Errorf("source schema: %w", err)
	}
	if err := localenv.ApplySQL(ctx, b.dst, inbox, benchDstSQL); err != nil {
		return fmt.Errorf("destination schema: %w", err)
	}
	return nil
}

// streamSpec is the stream the relay provisions; steps that publish without
// a relay create the same one.
func streamSpec() provision.StreamSpec {
	return provision.StreamSpec{
		Name:       streamName,
		Subjects:   []string{appSrc + ".sync.*", appSrc + ".sync.dlq", envelope.PartitionFilter(subject)}, // the last for step 9
		Fallback:   []string{subject},
		Duplicates: 2 * time.Minute,
		Replicas:   1,
		AllowBatch: true, // as the relay's AUTO_PROVISION does on nats-server 2.14+
	}
}

// resetStream deletes the stream; with create it makes a fresh one.
func (b *bench) resetStream(ctx context.Context, create bool) error {
	if err := b.js.DeleteStream(ctx, streamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete stream: %w", err)
	}
	if !create {
		return nil
	}
	if _, err := provision.EnsureStream(ctx, b.js, streamSpec(), zerolog.Nop()); err != nil {
		return err
	}
	return nil
}

// streamMsgs is the number of messages in the stream (0 when it does not exist).
func (b *bench) streamMsgs(ctx context.Context) (uint64, error) {
	s, err := b.js.Stream(ctx, streamName)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// resetSource drops the relay's slot and empties the outbox, so that a new
// slot starts after everything already there.
func (b *bench) resetSource(ctx context.Context) error {
	if err := b.dropSlot(ctx); err != nil {
		return err
	}
	if _, err := b.src.Exec(ctx, "TRUNCATE "+outboxTable+", "+pollTable); err != nil {
		return fmt.Errorf("truncate outbox: %w", err)
	}
	return nil
}

// dropSlot drops the relay's replication slot, ending a walsender that still
// holds it (a relay that was killed).
func (b *bench) dropSlot(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := b.src.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, b.slot)
		if err == nil {
			_, err = b.src.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE slot_name = $1 AND NOT active`, b.slot)
		}
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "55006") {
			return fmt.Errorf("drop replication slot %s: %w", b.slot, err)
		}
		var left bool
		if err := b.src.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", b.slot).Scan(&left); err != nil {
			return err
		}
		if !left {
			// Retired on purpose: without its record the next relay starts
			// the slot afresh instead of recovering it from the table.
			if _, err := b.src.Exec(ctx, "DELETE FROM "+migrations.SlotsTable(outboxTable)+" WHERE slot_name = $1", b.slot); err != nil &&
				!(errors.As(err, &pgErr) && pgErr.Code == "42P01") {
				return fmt.Errorf("forget replication slot %s: %w", b.slot, err)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication slot %s still active after 30s", b.slot)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// resetSink deletes the sink's consumer and empties the inbox and the
// applied table.
func (b *bench) resetSink(ctx context.Context) error {
	if err := b.js.DeleteConsumer(ctx, streamName, durableName); err != nil &&
		!errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete consumer: %w", err)
	}
	if _, err := b.dst.Exec(ctx, "TRUNCATE "+inboxTable+", "+inboxTable+"_positions, bench.applied, bench.resources"); err != nil {
		return fmt.Errorf("truncate inbox: %w", err)
	}
	return nil
}

// close stops every process, then the servers, and removes the temporary
// directory (unless --keep or a failure). It runs on its own contexts, so
// that it also cleans up after Ctrl-C.
func (b *bench) close() {
	b.mu.Lock()
	procs := slices.Clone(b.procs)
	b.mu.Unlock()
	for _, p := range procs {
		_ = p.stop(10 * time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if b.js != nil && b.opts.NATSURL != "" {
		_ = b.js.DeleteStream(ctx, streamName)
	}
	if b.nc != nil {
		b.nc.Close()
	}
	if b.src != nil && b.opts.DatabaseURL != "" {
		_ = b.dropSlot(ctx)
		drop := []string{"DROP SCHEMA IF EXISTS bench CASCADE"}
		if b.external.outbox {
			drop = append(drop, "DROP PUBLICATION IF EXISTS "+migrations.DefaultPublication,
				"DROP TABLE IF EXISTS "+outboxTable, "DROP FUNCTION IF EXISTS public.jetstream_publish")
		}
		if b.external.inbox {
			drop = append(drop, "DROP TABLE IF EXISTS "+inboxTable+", "+inboxTable+"_positions")
		}
		for _, q := range drop {
			if _, err := b.src.Exec(ctx, q); err != nil {
				fmt.Fprintf(b.out, "cleanup: %s: %v\n", q, err)
			}
		}
	}
	if b.src != nil {
		b.src.Close()
	}
	if b.dst != nil {
		b.dst.Close()
	}
	if b.pg != nil {
		if err := b.pg.Close(); err != nil {
			fmt.Fprintf(b.out, "cleanup: stop postgres: %v\n", err)
		}
	}
	if b.natsProc != nil {
		if err := b.natsProc.stop(30 * time.Second); err != nil {
			fmt.Fprintf(b.out, "cleanup: stop nats: %v\n", err)
		}
	}
	if b.dir == "" {
		return
	}
	if err := localenv.CloseWorkDir(b.out, b.dir, b.opts.Keep || b.failed); err != nil {
		fmt.Fprintf(b.out, "cleanup: %v\n", err)
	}
}

// printTails prints the end of every process log after a failure.
func (b *bench) printTails() {
	b.failed = true
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.procs {
		fmt.Fprintf(b.out, "--- %s (last lines of %s)\n%s\n", p.name, p.logPath, p.tail(15))
	}
	if b.natsProc != nil {
		fmt.Fprintf(b.out, "--- nats (last lines of %s)\n%s\n", b.natsProc.logPath, b.natsProc.tail(15))
	}
	if b.pg != nil {
		fmt.Fprintf(b.out, "--- postgres\n%s\n", b.pg.LogTail(15))
	}
}
