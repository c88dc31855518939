// Command relay tails Postgres logical replication of the outbox table and
// publishes every committed insert to NATS JetStream.
//
//	relay [run]      stream the outbox to JetStream (default)
//	relay provision  create schema, publication, slot and stream once, then exit
//	relay status     print slot and stream state (--json, --watch)
//	relay backfill   republish outbox rows from the table (--since)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr}
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

// Main dispatches subcommands.
type Main struct {
	Stdout, Stderr io.Writer
	Environ        map[string]string // nil = process environment
}

// Run runs the subcommand named by args[0] (run when absent).
func (m *Main) Run(ctx context.Context, args []string) error {
	cmd := "run"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return m.run(ctx, args)
	case "provision":
		return m.provision(ctx, args)
	case "status":
		return m.status(ctx, args)
	case "backfill":
		return m.backfill(ctx, args)
	case "help":
		m.usage()
		return nil
	default:
		m.usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func (m *Main) usage() {
	fmt.Fprint(m.Stdout, `relay streams committed outbox inserts from Postgres to NATS JetStream.

Usage:
  relay [run]               stream the outbox (default)
  relay provision           create schema, publication, slot and stream, then exit
  relay status [--json] [--watch=2s]
                            print slot and stream state
  relay backfill --since TIME|all [--dry-run]
                            republish outbox rows from the table (rows older than
                            the slot, or lost with a lost slot); sinks dedupe

Environment (name, default, meaning):
`)
	Usage(m.Stdout)
}

// flags parses the common flags of a subcommand.
func (m *Main) flags(name string, args []string, define func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet("relay "+name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = m.usage
	if define != nil {
		define(fs)
	}
	return fs.Parse(args)
}

// load reads and validates the configuration.
func (m *Main) load() (*Config, error) {
	var c Config
	if err := loadConfig(&c, m.Environ); err != nil {
		return nil, fmt.Errorf("configuration:\n%w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("configuration:\n%w", err)
	}
	return &c, nil
}
