// Command relay tails Postgres logical replication of the outbox table and
// publishes every committed insert to NATS JetStream.
//
//	relay [run]      stream the outbox to JetStream (default)
//	relay provision  create schema, publication, slot and stream once, then exit
//	relay status     print slot and stream state (--json, --watch)
//	relay backfill   republish outbox rows from the table (--since)
//	relay audit      compare outbox rows with the stream (--since)
//	relay version    print the build
//
// Every command answers --help; the exit status is 0 on success, 1 on a
// runtime failure, 2 on a usage or configuration error and 3 when audit
// finds a gap.
package main

import (
	"context"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
)

func main() {
	// The relay's live heap is a few MB, so with Go's default GOGC=100 it
	// collects some fifty times a second while draining a backlog. A
	// higher target costs ~25 MB of RSS and saves about a quarter of the CPU
	// per event (docs/BENCHMARKS.md). GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	// The relay is one sequential stream: read WAL, build, publish, track
	// acks. With several Ps every event wakes idle threads to hand it from
	// goroutine to goroutine, which costs more CPU than the work itself and,
	// next to Postgres, takes it from the walsender: in alternating rounds
	// at 5k events/s on two cores p99 commit→ack was 6–19 ms with one P
	// against 49–70 ms with two, and backlog drain rose ~5%
	// (docs/BENCHMARKS.md). One core drains well over 100k events/s.
	// GOMAXPROCS in the environment still wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	cli.Exec("relay", newMain(os.Stdout, os.Stderr, nil).Run)
}

// Main dispatches subcommands.
type Main struct{ cli.CLI }

func newMain(stdout, stderr io.Writer, environ map[string]string) *Main {
	m := &Main{cli.CLI{Name: "relay", Summary: summary, Stdout: stdout, Stderr: stderr, Environ: environ, Config: &Config{}}}
	m.Commands = []cli.Command{{
		Name:    "run",
		Summary: "stream the outbox (default)",
		Detail: `Streams every committed outbox insert to JetStream until SIGTERM or SIGINT, then
waits up to SHUTDOWN_TIMEOUT for in-flight acks and confirms the acked position.
With AUTO_PROVISION=true (default) it first does what provision does.`,
		Example: "DATABASE_URL=postgres://bridge@db:5432/app APP_NAME=orders DESTINATION_APP=billing relay run",
		Run:     m.run,
	}, {
		Name:    "provision",
		Summary: "create schema, publication, slot and stream, then exit",
		Detail:  "Idempotent: what exists is kept (the stream's subjects are extended when needed).",
		Example: "DATABASE_URL=postgres://admin@db:5432/app APP_NAME=orders DESTINATION_APP=billing relay provision",
		Run:     m.provision,
	}, {
		Name:    "status",
		Args:    "[--json] [--watch=2s]",
		Summary: "print slot and stream state",
		Detail:  "Exits 1 when the database is unreachable, so it can serve as a check.",
		Env:     slices.Concat(cli.OneShotEnv, []string{"OUTBOX_TABLE", "REPLICATION_SLOT", "PUBLICATION"}),
		Example: "relay status --watch=2s",
		Run:     m.status,
	}, {
		Name:    "backfill",
		Args:    "--since TIME|all [--dry-run]",
		Summary: "republish outbox rows from the table",
		Detail: `Republishes rows the replication slot never streamed: rows older than the slot,
or committed while a lost slot was recreated. Each row keeps its event id, so
JetStream and the sinks' inboxes drop copies: running it twice is safe.`,
		Env:     slices.Concat(cli.OneShotEnv, []string{"OUTBOX_TABLE", "MAX_INFLIGHT", "USE_DLQ"}),
		Example: "relay backfill --since 2026-01-02T15:04:05Z --dry-run\nrelay backfill --since 2026-01-02T15:04:05Z",
		Run:     m.backfill,
	}, {
		Name:    "audit",
		Args:    "--since TIME|DURATION|all [--json] [--limit=10] [--page=1000] [--settle=10s] [--margin=1m]",
		Summary: "compare outbox rows with the stream: missing, stored twice, out of order",
		Detail: `Reads this producer's messages from the stream (headers only, --page at a time, into
a temporary table) and compares them with the outbox rows whose occurred_at is at or
after TIME. Run it after a failover, a slot recovery or a backfill. Exit status 3:
rows missing from the stream or messages out of commit order; copies stored twice
are reported but are no gap. Rows younger than --settle are left out as in flight.`,
		Env:     slices.Concat(cli.OneShotEnv, []string{"OUTBOX_TABLE"}),
		Example: "relay audit --since 1h\nrelay audit --since 2026-01-02T15:04:05Z --json",
		Run:     m.audit,
	}}
	return m
}

// Run runs the command args name (run when absent).
func (m *Main) Run(ctx context.Context, args []string) error { return m.Dispatch(ctx, args) }

const summary = `relay streams committed outbox inserts from Postgres to NATS JetStream.`

// load reads and validates the configuration.
func (m *Main) load() (*Config, error) {
	var c Config
	return &c, m.Load(&c)
}
