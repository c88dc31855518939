// Command sink consumes JetStream events and applies each exactly once to
// Postgres: one transaction per event holds the inbox row (dedupe on event id)
// and the handler's writes (a SQL procedure or function, or a webhook), and
// the message is acknowledged only after the commit.
//
//	sink [run]                   consume and apply (default)
//	sink provision               create inbox schema, stream and consumer once, then exit
//	sink status [--json]         print consumer and inbox state
//	sink dlq list [--json]       print dead letters
//	sink dlq replay (--event-id ID | --class C | --all) [--dry-run]
//	                             republish dead letters to their original subject
//	sink audit --since TIME      compare the stream's events with the inbox
//	sink version                 print the build
//
// Every command answers --help; the exit status is 0 on success, 1 on a
// runtime failure, 2 on a usage or configuration error and 3 when audit
// finds a gap.
package main

import (
	"context"
	"io"
	"os"
	"slices"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

func main() {
	cli.Exec("sink", newMain(os.Stdout, os.Stderr, nil).Run)
}

// Main dispatches subcommands.
type Main struct{ cli.CLI }

func newMain(stdout, stderr io.Writer, environ map[string]string) *Main {
	m := &Main{cli.CLI{Name: "sink", Summary: summary, Stdout: stdout, Stderr: stderr, Environ: environ, Config: &Config{}}}
	// run and provision read the whole configuration; provision does not need
	// HANDLER or ROUTES_FILE.
	handlerless := slices.DeleteFunc(config.EnvNames(&Config{}), func(n string) bool { return n == "HANDLER" || n == "ROUTES_FILE" })
	m.Commands = []cli.Command{{
		Name:    "run",
		Summary: "consume and apply (default)",
		Detail: `Applies each event in one transaction with its inbox row and acknowledges it
after the commit, until SIGTERM or SIGINT; then in-flight handlers get up to
SHUTDOWN_TIMEOUT. With AUTO_PROVISION=true (default) it first does what
provision does. HANDLER or ROUTES_FILE is required.`,
		Example: "DATABASE_URL=postgres://bridge@db:5432/billing APP_NAME=billing DESTINATION_APP=orders \\\n" +
			"  HANDLER=sql:public.apply_event sink run",
		Run: m.run,
	}, {
		Name:    "provision",
		Summary: "create inbox schema, stream and consumer, then exit",
		Detail:  "Idempotent: the stream is extended to the sink's subjects, the consumer created or updated.",
		Env:     handlerless,
		Example: "DATABASE_URL=postgres://admin@db:5432/billing APP_NAME=billing DESTINATION_APP=orders sink provision",
		Run:     m.provision,
	}, {
		Name:    "status",
		Args:    "[--json] [--watch=2s]",
		Summary: "print consumer and inbox state",
		Detail:  "Exits 1 when the database is unreachable or the consumer unavailable, so it can serve as a check.",
		Env: slices.Concat(cli.OneShotEnv, []string{"INBOX_TABLE", "DURABLE_NAME", "FILTER_SUBJECT", "CONSUMER_MODE",
			"DELIVER_SUBJECT", "MAX_DELIVER", "ACK_WAIT", "BACKOFF", "BATCH_SIZE", "CONCURRENCY", "PARTITIONS"}),
		Example: "sink status --json",
		Run:     m.status,
	}, {
		Name:    "dlq list",
		Args:    "[--json] [--class C] [--event-id ID]",
		Summary: "print dead letters",
		Env:     cli.OneShotEnv,
		Example: "sink dlq list --class handler",
		Run:     func(ctx context.Context, args []string) error { return m.dlq(ctx, "list", args) },
	}, {
		Name:    "dlq replay",
		Args:    "(--event-id ID | --class C | --all) [--dry-run]",
		Summary: "republish dead letters to their original subject",
		Detail: `Republishes each dead letter's body and original headers to its original subject.
The inbox applies a replayed event even when its row is dead; replaying the same
dead letter twice within the stream's duplicate window stores it once.`,
		Env:     cli.OneShotEnv,
		Example: "sink dlq replay --class handler --dry-run\nsink dlq replay --event-id 0b7e6a52-5f1c-4c1e-9a51-7d0f3c2e9b11",
		Run:     func(ctx context.Context, args []string) error { return m.dlq(ctx, "replay", args) },
	}, {
		Name:    "audit",
		Args:    "--since TIME|DURATION|all [--json] [--limit=10] [--page=1000] [--settle=10s]",
		Summary: "compare the stream's events with the inbox: not applied, dead, stale",
		Detail: `Reads the stream's messages on the filter subject stored since TIME (headers only,
--page at a time, into a temporary table) and looks each event up in the inbox.
Run it after a failover, a recovery or a DLQ replay. Exit status 3: events in the
stream not applied (no inbox row, or received/processing/failed); dead and stale
events are counted but are no gap. Messages younger than --settle are left out.`,
		Env:     slices.Concat(cli.OneShotEnv, []string{"INBOX_TABLE", "FILTER_SUBJECT"}),
		Example: "sink audit --since 1h\nsink audit --since 2026-01-02T15:04:05Z --json",
		Run:     m.audit,
	}}
	return m
}

// Run runs the command args name (run when absent).
func (m *Main) Run(ctx context.Context, args []string) error { return m.Dispatch(ctx, args) }

const summary = `sink applies JetStream events to Postgres exactly once (inbox + handler in one transaction).`

// load reads and validates the configuration; forRun also requires and
// checks the handler (HANDLER or ROUTES_FILE), which only `sink run` uses.
func (m *Main) load(forRun bool) (*Config, error) {
	c := Config{forRun: forRun}
	return &c, m.Load(&c)
}
