// Command relay tails Postgres logical replication of the outbox table and
// publishes every committed insert to NATS JetStream.
//
//	relay [run]      stream the outbox to JetStream (default)
//	relay provision  create schema, publication, slot and stream once, then exit
//	relay status     print slot and stream state (--json, --watch)
//	relay backfill   republish outbox rows from the table (--since)
//	relay audit      compare outbox rows with the stream (--since)
package main

import (
	"context"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
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
	config.Exec("relay", newMain(os.Stdout, os.Stderr, nil).Run)
}

// Main dispatches subcommands.
type Main struct{ config.CLI }

func newMain(stdout, stderr io.Writer, environ map[string]string) *Main {
	return &Main{config.CLI{Name: "relay", Summary: usage, Stdout: stdout, Stderr: stderr, Environ: environ, Config: &Config{}}}
}

// Run runs the subcommand named by args[0] (run when absent).
func (m *Main) Run(ctx context.Context, args []string) error {
	return m.Dispatch(ctx, args, map[string]func(context.Context, []string) error{
		"run": m.run, "provision": m.provision, "status": m.status, "backfill": m.backfill, "audit": m.audit,
	})
}

const usage = `relay streams committed outbox inserts from Postgres to NATS JetStream.

Usage:
  relay [run]               stream the outbox (default)
  relay provision           create schema, publication, slot and stream, then exit
  relay status [--json] [--watch=2s]
                            print slot and stream state
  relay backfill --since TIME|all [--dry-run]
                            republish outbox rows from the table (rows older than
                            the slot, or lost with a lost slot); sinks dedupe
  relay audit --since TIME|DURATION|all [--json] [--limit N] [--settle 5s] [--strict]
                            compare outbox rows with the stream: missing (exit 3),
                            stored twice, out of commit order
`

// load reads and validates the configuration.
func (m *Main) load() (*Config, error) {
	var c Config
	return &c, m.Load(&c)
}
