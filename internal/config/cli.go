package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Exec runs a binary's entry point under a context that SIGINT and SIGTERM
// cancel, prints a returned error once and exits non-zero.
func Exec(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		// An error may choose its status (an audit's gap is 3, apart from 1
		// for "could not run").
		code := 1
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			code = coded.ExitCode()
		}
		os.Exit(code)
	}
}

// Validator is a configuration that checks itself.
type Validator interface{ Validate() error }

// CLI is the command-line scaffolding the bridge binaries share: subcommand
// dispatch, flags, usage with the list of environment variables, and loading
// the configuration.
type CLI struct {
	Name           string // the binary, e.g. "relay"
	Summary        string // usage text printed before the environment list
	Stdout, Stderr io.Writer
	Environ        map[string]string // nil = the process environment
	Config         any               // pointer to a zero configuration, for the environment list
}

// Dispatch runs the subcommand named by args[0], "run" when absent.
func (c *CLI) Dispatch(ctx context.Context, args []string, cmds map[string]func(context.Context, []string) error) error {
	cmd := "run"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	if cmd == "help" {
		c.Usage()
		return nil
	}
	f, ok := cmds[cmd]
	if !ok {
		c.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
	return f(ctx, args)
}

// Usage prints the summary and every environment variable with its default.
func (c *CLI) Usage() {
	fmt.Fprint(c.Stdout, c.Summary)
	fmt.Fprint(c.Stdout, "\nEnvironment (name, default, meaning):\n")
	Usage(c.Stdout, c.Config)
}

// Flags parses a subcommand's flags; positional arguments are refused.
func (c *CLI) Flags(sub string, args []string, define func(*flag.FlagSet)) error {
	fs := flag.NewFlagSet(c.Name+" "+sub, flag.ContinueOnError)
	fs.SetOutput(c.Stderr)
	fs.Usage = c.Usage
	if define != nil {
		define(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s %s: unexpected argument %q", c.Name, sub, fs.Arg(0))
	}
	return nil
}

// Load fills cfg from the environment and validates it.
func (c *CLI) Load(cfg Validator) error {
	if err := Load(cfg, c.Environ); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	return nil
}

// ConnectQuiet connects to NATS for a one-shot command: it logs only with
// LOG_LEVEL=debug and gives up after 10 seconds.
func (c *CLI) ConnectQuiet(ctx context.Context, common *Common, purpose string) (*nats.Conn, error) {
	log := zerolog.Nop()
	if common.LogLevel == "debug" {
		log = NewLogger(common, c.Stderr, c.Name)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return ConnectNATS(cctx, common, "jetstream-bridge-"+c.Name+"-"+purpose, log)
}

// Watch calls show once, or every interval until ctx ends when interval > 0,
// clearing the terminal between rounds.
func (c *CLI) Watch(ctx context.Context, interval time.Duration, clear bool, show func() error) error {
	for {
		if interval > 0 && clear {
			fmt.Fprint(c.Stdout, "\033[H\033[2J")
		}
		err := show()
		if interval <= 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}
