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
//	sink audit --since TIME      compare the stream with the inbox
package main

import (
	"context"
	"io"
	"os"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

func main() {
	config.Exec("sink", newMain(os.Stdout, os.Stderr, nil).Run)
}

// Main dispatches subcommands.
type Main struct{ config.CLI }

func newMain(stdout, stderr io.Writer, environ map[string]string) *Main {
	return &Main{config.CLI{Name: "sink", Summary: usage, Stdout: stdout, Stderr: stderr, Environ: environ, Config: &Config{}}}
}

// Run runs the subcommand named by args[0] (run when absent).
func (m *Main) Run(ctx context.Context, args []string) error {
	return m.Dispatch(ctx, args, map[string]func(context.Context, []string) error{
		"run": m.run, "provision": m.provision, "status": m.status, "dlq": m.dlq, "audit": m.audit,
	})
}

const usage = `sink applies JetStream events to Postgres exactly once (inbox + handler in one transaction).

Usage:
  sink [run]                consume and apply (default)
  sink provision            create inbox schema, stream and consumer, then exit
  sink status [--json]      print consumer and inbox state
  sink dlq list [--json] [--class C] [--event-id ID]
                            print dead letters
  sink dlq replay (--event-id ID | --class C | --all) [--dry-run]
                            republish dead letters to their original subject
  sink audit --since TIME|DURATION|all [--json] [--limit N] [--settle 5s] [--strict]
                            compare the stream with the inbox: not applied (exit 3),
                            dead, stale
`

// load reads and validates the configuration; forRun also requires and
// checks the handler (HANDLER or ROUTES_FILE), which only `sink run` uses.
func (m *Main) load(forRun bool) (*Config, error) {
	c := Config{forRun: forRun}
	return &c, m.Load(&c)
}
