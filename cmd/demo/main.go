// Command demo runs the two-system example end to end on one machine: two
// Postgres databases (system_a and system_b) that sync organizations and users
// both ways through NATS JetStream, with a relay and a sink per database.
//
//	go run ./cmd/demo                 run until Ctrl-C
//	go run ./cmd/demo --duration 10s  write for 10s, verify, exit 0 when converged
//
// It builds the relay and sink, starts a throwaway Postgres cluster and an
// embedded JetStream server (or uses the ones named by DATABASE_URL_A,
// DATABASE_URL_B and NATS_URLS), applies the outbox, inbox and demo schemas,
// starts the four processes, writes on both sides at a steady rate, shows the
// sync live and finally checks that both databases hold the same rows and that
// no event was echoed back to its origin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

func main() {
	interrupts := make(chan os.Signal, 4)
	signal.Notify(interrupts, os.Interrupt, syscall.SIGTERM)
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, Interrupts: interrupts}
	os.Exit(cli.Report(os.Stderr, "demo", m.Run(context.Background(), os.Args[1:])))
}

// Main runs the demo.
type Main struct {
	Stdout, Stderr io.Writer
	// Interrupts delivers SIGINT/SIGTERM. The first stops writing (then the
	// demo verifies and shuts down), the second skips waiting for convergence.
	Interrupts <-chan os.Signal
	Getenv     func(string) string // nil = os.Getenv
}

// Options are the demo's flags.
type Options struct {
	Duration        time.Duration // 0 = until interrupted
	Rate            int           // writes per second on each side
	ConvergeTimeout time.Duration
	Keep            bool
	BinDir          string
	DatabaseA       string
	DatabaseB       string
	NATSURLs        string
	NoInstall       bool
}

func (m *Main) getenv(k string) string {
	if m.Getenv != nil {
		return m.Getenv(k)
	}
	return os.Getenv(k)
}

const usageText = `demo runs two systems that sync organizations and users both ways through
NATS JetStream: system_a and system_b, each a Postgres database with a relay
(outbox -> JetStream) and a sink (JetStream -> handler demo.apply_event).

Usage:
  go run ./cmd/demo [flags]        (or: make demo)
  demo version                     print the version, VCS revision and Go version (also --version)

Without --duration it writes until Ctrl-C; then it waits for both sides to
converge, prints a summary and shuts everything down. A second Ctrl-C skips
the wait. Exit status 0 means: every event applied on the other side, both
databases hold the same rows, nothing dead-lettered, no event echoed back.
Status 1 means it did not converge or failed to run; 2, a bad flag or variable.
(After Ctrl-C, ` + "`go run`" + ` itself exits 1 whatever the demo returns; the last line,
"result: converged=...", is the verdict. A built binary exits with the demo's status.)

Flags (each also read from the environment variable named in brackets):
  --duration D          write for D (e.g. 10s), verify and exit [DEMO_DURATION]
  --rate N              writes per second on each side (default 50) [DEMO_RATE]
  --converge-timeout D  how long to wait for convergence (default 60s) [DEMO_CONVERGE_TIMEOUT]
  --keep                keep the temporary directory (data, logs) [DEMO_KEEP=true]
  --bin-dir DIR         use the relay and sink binaries in DIR instead of building them [DEMO_BIN_DIR]
  --db-a URL            use this database as system_a instead of a local cluster [DATABASE_URL_A]
  --db-b URL            use this database as system_b (with --db-a) [DATABASE_URL_B]
  --nats URLS           use these NATS servers instead of an embedded one [NATS_URLS]
  --no-install          do not offer to apt-get install Postgres when it is missing

Local mode (the default) needs the PostgreSQL server binaries (PG_BIN, or
/usr/lib/postgresql/*/bin). When they are missing and the demo runs as root
it installs them with apt-get (unless --no-install).

With --db-a/--db-b the demo creates schema demo, the outbox and the inbox in
those databases (the role needs CREATE and REPLICATION; wal_level=logical).
They must be two different databases; the replication slots are named
jetstream_bridge_system_a and jetstream_bridge_system_b. NATS_CREDS,
NATS_USER/NATS_PASSWORD, NATS_TOKEN and NATS_TLS_* are passed on.

Tuning variables of the relay and sink (MAX_INFLIGHT, CONCURRENCY, BATCH_SIZE,
BACKOFF, ...) are passed on to them from the environment, e.g.
  CONCURRENCY=16 go run ./cmd/demo --rate 500 --duration 30s
`

// parse reads flags, with defaults from the environment.
func (m *Main) parse(args []string) (*Options, error) {
	o := &Options{Rate: 50, ConvergeTimeout: 60 * time.Second}
	var errs []error
	envDuration := func(name string, dst *time.Duration) {
		if v := m.getenv(name); v != "" {
			d, err := config.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: expected a duration such as 10s or 2m", name, v))
				return
			}
			*dst = d
		}
	}
	envDuration("DEMO_DURATION", &o.Duration)
	envDuration("DEMO_CONVERGE_TIMEOUT", &o.ConvergeTimeout)
	if v := m.getenv("DEMO_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DEMO_RATE=%q: expected a whole number of writes per second", v))
		}
		o.Rate = n
	}
	if v := m.getenv("DEMO_KEEP"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DEMO_KEEP=%q: expected true or false", v))
		}
		o.Keep = b
	}
	o.BinDir = m.getenv("DEMO_BIN_DIR")
	o.DatabaseA = m.getenv("DATABASE_URL_A")
	o.DatabaseB = m.getenv("DATABASE_URL_B")
	o.NATSURLs = m.getenv("NATS_URLS")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Func("duration", "", func(s string) (err error) { o.Duration, err = config.ParseDuration(s); return })
	fs.IntVar(&o.Rate, "rate", o.Rate, "")
	fs.Func("converge-timeout", "", func(s string) (err error) { o.ConvergeTimeout, err = config.ParseDuration(s); return })
	fs.BoolVar(&o.Keep, "keep", o.Keep, "")
	fs.StringVar(&o.BinDir, "bin-dir", o.BinDir, "")
	fs.StringVar(&o.DatabaseA, "db-a", o.DatabaseA, "")
	fs.StringVar(&o.DatabaseB, "db-b", o.DatabaseB, "")
	fs.StringVar(&o.NATSURLs, "nats", o.NATSURLs, "")
	fs.BoolVar(&o.NoInstall, "no-install", false, "")
	if err := cli.ParseFlags(fs, args, func() { fmt.Fprint(m.Stdout, usageText) }); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	switch {
	case o.Rate < 1 || o.Rate > 100000:
		return nil, fmt.Errorf("--rate %d: expected 1 to 100000 writes per second", o.Rate)
	case o.ConvergeTimeout <= 0:
		return nil, errors.New("--converge-timeout: must be positive")
	case (o.DatabaseA == "") != (o.DatabaseB == ""):
		return nil, errors.New("--db-a and --db-b (DATABASE_URL_A, DATABASE_URL_B) go together: give both or neither")
	case o.DatabaseA != "" && o.DatabaseA == o.DatabaseB:
		return nil, errors.New("--db-a and --db-b name the same database; the two systems need two databases")
	}
	o.NATSURLs = strings.TrimSpace(o.NATSURLs)
	return o, nil
}

// Run runs the demo. It returns nil only when both sides converged.
func (m *Main) Run(ctx context.Context, args []string) error {
	if cli.PrintVersion(m.Stdout, "demo", args) {
		return nil
	}
	o, err := m.parse(args)
	if err != nil {
		return cli.AsUsage(err)
	}
	// Phase contexts: the first interrupt ends setup and writing, the second
	// the wait for convergence. Shutdown runs on its own bounded contexts.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	waitCtx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	go func() {
		n := 0
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-m.Interrupts:
				if !ok {
					return
				}
				n++
				switch n {
				case 1:
					stopRun()
				case 2:
					fmt.Fprintln(m.Stdout, "\ninterrupted again: not waiting for convergence")
					stopWait()
				default:
					fmt.Fprintln(m.Stdout, "\nstill shutting down (processes, Postgres); please wait")
				}
			}
		}
	}()

	d := &demo{opts: o, out: m.Stdout, getenv: m.getenv}
	defer d.close()
	return d.run(runCtx, waitCtx)
}
