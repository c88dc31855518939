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

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr}
	if err := m.Run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "sink:", err)
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
	case "dlq":
		return m.dlq(ctx, args)
	case "help":
		m.usage()
		return nil
	default:
		m.usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func (m *Main) usage() {
	fmt.Fprint(m.Stdout, `sink applies JetStream events to Postgres exactly once (inbox + handler in one transaction).

Usage:
  sink [run]                consume and apply (default)
  sink provision            create inbox schema, stream and consumer, then exit
  sink status [--json]      print consumer and inbox state
  sink dlq list [--json] [--class C] [--event-id ID]
                            print dead letters
  sink dlq replay (--event-id ID | --class C | --all) [--dry-run]
                            republish dead letters to their original subject

Environment (name, default, meaning):
`)
	config.Usage(m.Stdout, &Config{})
}

// flags parses the flags of a subcommand.
func (m *Main) flags(name string, args []string, define func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet("sink "+name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = m.usage
	if define != nil {
		define(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sink %s: unexpected argument %q", name, fs.Arg(0))
	}
	return nil
}

// load reads and validates the configuration.
func (m *Main) load() (*Config, error) {
	var c Config
	if err := config.Load(&c, m.Environ); err != nil {
		return nil, fmt.Errorf("configuration:\n%w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("configuration:\n%w", err)
	}
	return &c, nil
}
