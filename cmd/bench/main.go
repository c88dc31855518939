// Command bench measures JetStream Bridge on this machine and compares every
// result with the machine's own limits, measured in the same run.
//
//	go run ./cmd/bench                     the full benchmark (make bench)
//	go run ./cmd/bench --quick             tiny sizes, seconds (CI smoke)
//	go run ./cmd/bench --only 2,3 --reps 5 some steps only (step 1 always runs)
//
// It starts a throwaway Postgres cluster and a JetStream server (this binary
// again, in a process of its own; or uses --database-url / --nats-url), builds
// the relay and the sink and runs them as separate processes, as in production, then prints a table of the
// median of --reps repetitions with MET / NOT MET against the project's
// targets, and writes the same as JSON with --json. docs/BENCHMARKS.md
// explains the method and the results.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveNATSCommand {
		if err := serveNATS(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr}
	err := m.Run(ctx, os.Args[1:])
	stop()
	os.Exit(cli.Report(os.Stderr, "bench", err))
}

// Main runs the benchmark.
type Main struct {
	Stdout, Stderr io.Writer
}

// Options are the benchmark's flags.
type Options struct {
	Reps          int
	Events        int           // relay / polling backlog, raw JetStream publishes
	SinkEvents    int           // events each sink run applies
	Duration      time.Duration // each steady-state and end-to-end rate
	LimitDuration time.Duration // each raw Postgres insert measurement
	MsgDuration   time.Duration // each mode's writers in step 7, relay running
	Writers       int           // Postgres connections of the writers
	Rates         []int         // steady-state writer rates, 0 = as fast as Postgres allows
	E2ERates      []int
	Concurrency   []int    // sink CONCURRENCY values
	E2EConc       int      // sink CONCURRENCY in the end-to-end step
	Pollers       []int    // polling baseline: pollers
	PollModes     []string // polling baseline variants: classic, tuned
	PollBatch     int
	PollInterval  time.Duration
	MaxInflight   int // the relay's MAX_INFLIGHT, also the raw publish window
	Only          map[int]bool
	JSON          string
	Quick         bool
	DatabaseURL   string
	NATSURL       string
	Fsync         bool
	Keep          bool
	BinDir        string
	Profile       string   // directory for CPU/heap profiles of relay, sink and bench
	RelayEnv      []string // extra KEY=VALUE for every relay (tuning experiments)
	SinkEnv       []string // extra KEY=VALUE for every sink
	MemRows       int      // step 8: rows in the one transaction the relay drains
	MemEvents     int      // step 8: large events the sink applies
	MemEventBytes int      // step 8: their size
	MemConc       int      // step 8: the sink's CONCURRENCY
	PostgresCPUs  []int    // the local cluster's CPUs; the rest run on the others (pin.go)
}

const usageText = `bench measures JetStream Bridge on this machine: the machine's limits (raw
Postgres inserts, raw JetStream publishes), the relay (backlog drain, steady
state, latency), the sink (SQL and webhook handlers), end to end, and a
polling outbox (classic and tuned) for comparison. Every result is also given as a ratio
to its limit from step 1, measured in the same run, and checked against the
project's targets (MET / NOT MET).

Usage:
  go run ./cmd/bench [flags]        (or: make bench)
  bench version                     print the version, VCS revision and Go version (also --version)

Exit status: 0 success, 1 runtime failure, 2 usage error (a bad flag or value).

Steps (--only takes a comma list; step 1 always runs, the others are ratios to it):
  1  limits: raw Postgres outbox inserts (1-row and 10-row transactions,
     --writers connections), raw JetStream async publish (window --max-inflight)
  2  relay backlog drain: --events rows in the outbox before the relay starts
  3  relay steady state: writers at --rates for --duration each; lag, commit→ack latency
  4  sink: --sink-events events through a no-op SQL procedure, an upsert SQL function
     and a local webhook at each --concurrency; next to each its limit: the same SQL
     straight to Postgres, for the webhook the lesser of a bare HTTP client and the
     inbox rows alone
  5  end to end relay → JetStream → sink: commit→applied latency at --e2e-rates
  6  polling outbox baseline (SELECT … FOR UPDATE SKIP LOCKED, publish, UPDATE) in the
     --poll-modes variants, each with every --pollers count
  7  outbox as WAL messages: jetstream_publish writers (1-row tx, --writers conns,
     --msg-duration each) in message mode vs table mode while the relay streams,
     prunes (OUTBOX_RETENTION=1s) and the outbox is vacuumed; the same writers alone
     (--limit-duration, no relay); the relay's drain of --events messages vs rows
  8  memory: relay peak RSS draining one transaction of --mem-rows rows; sink peak
     RSS applying --mem-events events of --mem-event-bytes at CONCURRENCY --mem-concurrency
  9  partitioned sinks (only with --only 9): --sink-events events over 16 partitions
     (PARTITIONS=16) through the no-op SQL procedure by 1, 2 and 4 sink processes

Flags:
  --reps N              repetitions; the table shows the median (default 3)
  --events N            backlog size of steps 2 and 6, raw publishes in step 1 (default 100000)
  --sink-events N       events per sink run (default 100000)
  --duration D          per rate in steps 3, 5 and 6 (default 10s)
  --limit-duration D    per raw Postgres insert measurement (default 5s)
  --msg-duration D      per mode of step 7's writers with the relay running (default 20s)
  --writers N           writer connections (default 8)
  --rates LIST          steady-state rates per second, max = as fast as Postgres allows (default 1000,5000,max)
  --e2e-rates LIST      end-to-end rates (default 1000,5000)
  --concurrency LIST    sink CONCURRENCY values (default 1,4,16)
  --e2e-concurrency N   sink CONCURRENCY in step 5 (default 4, the sink's default)
  --pollers LIST        polling baseline poller counts (default 1,4)
  --poll-batch N        rows per poll (default 100)
  --poll-interval D     polling baseline's sleep when the outbox is empty (default 100ms)
  --poll-modes LIST     polling baseline variants (default classic,tuned): classic publishes
                        one row at a time and waits for its ack, as the Ruby jetstream_bridge
                        gem's flush_outbox (the baseline of the 3× target); tuned publishes the
                        whole batch asynchronously and waits for all acks
  --max-inflight N      relay MAX_INFLIGHT and the raw publish window (default 4096, the relay's default)
  --mem-rows N          rows of step 8's single transaction (default 1000000)
  --mem-events N        events of step 8's sink run (default 300)
  --mem-event-bytes N   size of each of those events (default 1000000)
  --mem-concurrency N   sink CONCURRENCY in step 8 (default 64)
  --only LIST           steps to run, e.g. 2,3 (step 1 always runs)
  --json FILE           also write the results as JSON
  --quick               tiny sizes, one repetition: a smoke run of every step in seconds
  --database-url URL    use this Postgres database instead of a local cluster; it must be a
                        scratch database (the bench creates, truncates and drops the bridge's
                        tables, publication and a replication slot in it); wal_level=logical
  --nats-url URL        use this NATS server instead of starting one (stream jsb-bench is
                        created and deleted)
  --fsync=false         local cluster with fsync, full_page_writes off (default: on, as in production)
  --postgres-cpus LIST  run the local Postgres cluster on these CPUs (e.g. 1) and everything else
                        on the others: a database host of its own, as in production, so that
                        a sink's or relay's CPU is not taken from Postgres (default: shared)
  --keep                keep the temporary directory (logs, data)
  --bin-dir DIR         use the relay and sink binaries in DIR instead of building them
  --relay-env K=V       extra environment for every relay, e.g. GOGC=400 or STATUS_INTERVAL=100ms
                        (repeatable)
  --sink-env K=V        extra environment for every sink, e.g. BATCH_SIZE=100 (repeatable)
  --profile DIR         write CPU profiles of the relay, the sink, the NATS server and the
                        bench process during steps 2-4, and relay heap profiles, to DIR
                        (builds relay and sink with a pprof listener)
`

// parse reads the flags.
func (m *Main) parse(args []string) (*Options, error) {
	o := &Options{
		Reps: 3, Events: 100_000, SinkEvents: 100_000, Duration: 10 * time.Second, LimitDuration: 5 * time.Second,
		MsgDuration: 20 * time.Second,
		Writers:     8, Rates: []int{1000, 5000, 0}, E2ERates: []int{1000, 5000}, Concurrency: []int{1, 4, 16},
		E2EConc: 4, Pollers: []int{1, 4}, PollModes: pollModeNames(), PollBatch: 100, PollInterval: 100 * time.Millisecond,
		MaxInflight: 4096, Fsync: true, MemRows: 1_000_000, MemEvents: 300, MemEventBytes: 1_000_000, MemConc: 64,
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	set := map[string]bool{}
	fs.IntVar(&o.Reps, "reps", o.Reps, "")
	fs.IntVar(&o.Events, "events", o.Events, "")
	fs.IntVar(&o.SinkEvents, "sink-events", o.SinkEvents, "")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "")
	fs.DurationVar(&o.LimitDuration, "limit-duration", o.LimitDuration, "")
	fs.DurationVar(&o.MsgDuration, "msg-duration", o.MsgDuration, "")
	fs.IntVar(&o.Writers, "writers", o.Writers, "")
	fs.Func("rates", "", func(s string) (err error) { o.Rates, err = parseList(s, true); return })
	fs.Func("e2e-rates", "", func(s string) (err error) { o.E2ERates, err = parseList(s, false); return })
	fs.Func("concurrency", "", func(s string) (err error) { o.Concurrency, err = parseList(s, false); return })
	fs.IntVar(&o.E2EConc, "e2e-concurrency", o.E2EConc, "")
	fs.Func("pollers", "", func(s string) (err error) { o.Pollers, err = parseList(s, false); return })
	fs.IntVar(&o.PollBatch, "poll-batch", o.PollBatch, "")
	fs.DurationVar(&o.PollInterval, "poll-interval", o.PollInterval, "")
	fs.Func("poll-modes", "", func(s string) (err error) { o.PollModes, err = parsePollModes(s); return })
	fs.IntVar(&o.MaxInflight, "max-inflight", o.MaxInflight, "")
	fs.IntVar(&o.MemRows, "mem-rows", o.MemRows, "")
	fs.IntVar(&o.MemEvents, "mem-events", o.MemEvents, "")
	fs.IntVar(&o.MemEventBytes, "mem-event-bytes", o.MemEventBytes, "")
	fs.IntVar(&o.MemConc, "mem-concurrency", o.MemConc, "")
	only := ""
	fs.StringVar(&only, "only", "", "")
	fs.StringVar(&o.JSON, "json", "", "")
	fs.BoolVar(&o.Quick, "quick", false, "")
	fs.StringVar(&o.DatabaseURL, "database-url", "", "")
	fs.StringVar(&o.NATSURL, "nats-url", "", "")
	fs.BoolVar(&o.Fsync, "fsync", o.Fsync, "")
	fs.BoolVar(&o.Keep, "keep", false, "")
	fs.Func("postgres-cpus", "", func(s string) (err error) { o.PostgresCPUs, err = parseCPUs(s); return })
	fs.StringVar(&o.BinDir, "bin-dir", "", "")
	fs.StringVar(&o.Profile, "profile", "", "")
	envFlag := func(dst *[]string) func(string) error {
		return func(s string) error {
			if k, _, ok := strings.Cut(s, "="); !ok || k == "" {
				return fmt.Errorf("%q: expected KEY=VALUE", s)
			}
			*dst = append(*dst, s)
			return nil
		}
	}
	fs.Func("relay-env", "", envFlag(&o.RelayEnv))
	fs.Func("sink-env", "", envFlag(&o.SinkEnv))
	if err := cli.ParseFlags(fs, args, func() { fmt.Fprint(m.Stdout, usageText) }); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.Quick {
		// Explicit flags still win over the quick sizes.
		quick := map[string]func(){
			"reps":            func() { o.Reps = 1 },
			"events":          func() { o.Events = 3000 },
			"sink-events":     func() { o.SinkEvents = 600 },
			"duration":        func() { o.Duration = 1500 * time.Millisecond },
			"limit-duration":  func() { o.LimitDuration = 700 * time.Millisecond },
			"msg-duration":    func() { o.MsgDuration = 2 * time.Second },
			"rates":           func() { o.Rates = []int{1000, 0} },
			"e2e-rates":       func() { o.E2ERates = []int{1000} },
			"concurrency":     func() { o.Concurrency = []int{16} },
			"pollers":         func() { o.Pollers = []int{1} },
			"mem-rows":        func() { o.MemRows = 20_000 },
			"mem-events":      func() { o.MemEvents = 100 },
			"mem-event-bytes": func() { o.MemEventBytes = 64 << 10 },
			// --poll-modes keeps its default: both variants, at the sizes above.
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	o.Only = map[int]bool{1: true}
	if only == "" {
		for s := 2; s <= 8; s++ { // step 9 runs only when named
			o.Only[s] = true
		}
	} else {
		steps, err := parseList(only, false)
		if err != nil {
			return nil, fmt.Errorf("--only: %w", err)
		}
		for _, s := range steps {
			if s < 1 || s > 9 {
				return nil, fmt.Errorf("--only: step %d does not exist (steps are 1 to 9)", s)
			}
			o.Only[s] = true
		}
	}
	switch {
	case o.Reps < 1 || o.Reps > 100:
		return nil, fmt.Errorf("--reps %d: expected 1 to 100", o.Reps)
	case o.Events < 100:
		return nil, fmt.Errorf("--events %d: expected at least 100", o.Events)
	case o.SinkEvents < 100:
		return nil, fmt.Errorf("--sink-events %d: expected at least 100", o.SinkEvents)
	case o.Duration < 500*time.Millisecond || o.LimitDuration < 200*time.Millisecond:
		return nil, errors.New("--duration must be at least 500ms and --limit-duration at least 200ms")
	case o.MsgDuration < time.Second:
		return nil, fmt.Errorf("--msg-duration %s: expected at least 1s", o.MsgDuration)
	case o.Writers < 1 || o.Writers > 64:
		return nil, fmt.Errorf("--writers %d: expected 1 to 64", o.Writers)
	case o.E2EConc < 1 || o.E2EConc > 256:
		return nil, fmt.Errorf("--e2e-concurrency %d: expected 1 to 256", o.E2EConc)
	case o.PollBatch < 1 || o.PollBatch > 10000:
		return nil, fmt.Errorf("--poll-batch %d: expected 1 to 10000", o.PollBatch)
	case o.PollInterval <= 0:
		return nil, errors.New("--poll-interval must be positive")
	case o.MemRows < 1 || o.MemEvents < 1 || o.MemEventBytes < 1024 || o.MemConc < 1 || o.MemConc > 256:
		return nil, errors.New("--mem-rows and --mem-events must be positive, --mem-event-bytes at least 1024, --mem-concurrency 1 to 256")
	case o.MaxInflight < 1 || o.MaxInflight > 100000:
		return nil, fmt.Errorf("--max-inflight %d: expected 1 to 100000", o.MaxInflight)
	case len(o.Rates) == 0 || len(o.E2ERates) == 0 || len(o.Concurrency) == 0 || len(o.Pollers) == 0:
		return nil, errors.New("--rates, --e2e-rates, --concurrency and --pollers need at least one value")
	}
	for _, c := range o.Concurrency {
		if c < 1 || c > 256 {
			return nil, fmt.Errorf("--concurrency %d: expected 1 to 256", c)
		}
	}
	for _, p := range o.Pollers {
		if p < 1 || p > 64 {
			return nil, fmt.Errorf("--pollers %d: expected 1 to 64", p)
		}
	}
	return o, nil
}

// parseList parses "1,4,16"; with allowMax, "max" is 0.
func parseList(s string, allowMax bool) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if allowMax && f == "max" {
			out = append(out, 0)
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			if allowMax {
				return nil, fmt.Errorf("%q: expected positive whole numbers or max, comma-separated", s)
			}
			return nil, fmt.Errorf("%q: expected positive whole numbers, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// Run runs the selected steps and prints the report. It returns an error when
// a step could not be measured; unmet targets are reported, not errors.
func (m *Main) Run(ctx context.Context, args []string) error {
	if cli.PrintVersion(m.Stdout, "bench", args) {
		return nil
	}
	o, err := m.parse(args)
	if err != nil {
		return cli.AsUsage(err)
	}
	b := &bench{opts: o, out: m.Stdout}
	defer b.close()
	if err := b.setup(ctx); err != nil {
		return err
	}
	b.report.begin(b)
	steps := []struct {
		n   int
		run func(context.Context) error
	}{
		{1, b.limits}, {2, b.drain}, {3, b.steady}, {4, b.sink}, {5, b.endToEnd}, {6, b.polling}, {7, b.messageMode}, {8, b.memory},
		{9, b.partitioned},
	}
	for _, s := range steps {
		if !o.Only[s.n] {
			continue
		}
		if err := s.run(ctx); err != nil {
			if ctx.Err() != nil {
				return errors.New("interrupted")
			}
			b.printTails()
			return fmt.Errorf("step %d: %w", s.n, err)
		}
	}
	b.report.end(b)
	b.report.print(m.Stdout)
	if o.JSON != "" {
		if err := b.report.writeJSON(o.JSON); err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "\nwrote %s\n", o.JSON)
	}
	return nil
}

// stepsRun lists the steps that ran, for the report.
func (o *Options) stepsRun() []int {
	var s []int
	for n := range o.Only {
		s = append(s, n)
	}
	slices.Sort(s)
	return s
}
