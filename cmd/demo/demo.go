package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

const (
	streamDefault = "jetstream-bridge-stream"
	handlerSpec   = "sql:demo.apply_event"
	readyTimeout  = 60 * time.Second
	stopTimeout   = 20 * time.Second
)

// demo is one run: the environment it started and the two sides.
type demo struct {
	opts   *Options
	out    io.Writer
	getenv func(string) string

	dir    string // temporary directory: binaries, Postgres, JetStream store, logs
	failed bool   // keep dir for the logs

	pg       *localenv.Postgres // nil with --db-a/--db-b
	ns       *localenv.NATS     // nil with --nats
	natsURLs string
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   string
	subjBase map[string]uint64 // stream messages per subject at the start

	sides [2]*side
	procs []*process
	tty   bool
}

// side is one system: its database, relay, sink and writer.
type side struct {
	name, peer  string
	url         string
	db          *pgxpool.Pool
	relay, sink *process
	base        baseline
	w           *writer
}

func (s *side) subject() string { return s.name + ".sync." + s.peer }

// run sets everything up, writes, verifies and reports. It returns nil only
// when both sides converged.
func (d *demo) run(runCtx, waitCtx context.Context) error {
	d.tty = isTerminal(d.out)
	d.stream = streamDefault
	if v := d.getenv("JETSTREAM_STREAM_NAME"); v != "" {
		d.stream = v
	}
	fmt.Fprintln(d.out, "JetStream Bridge demo: system_a and system_b sync organizations and users both ways.")
	if err := d.setup(runCtx); err != nil {
		if runCtx.Err() != nil {
			return errors.New("interrupted during setup")
		}
		d.failed = true
		d.printTails()
		return err
	}
	d.printHeader()

	if err := d.load(runCtx); err != nil {
		d.failed = true
		d.printTails()
		return err
	}
	rep, err := d.verify(waitCtx)
	if err != nil {
		d.failed = true
		d.printTails()
		return err
	}
	d.printSummary(rep)
	if !rep.converged() {
		d.failed = true
		d.printTails()
		return errors.New("the two systems did not converge (see above)")
	}
	return nil
}

// setup builds the binaries, starts (or connects to) Postgres and NATS,
// applies the schemas and starts the four processes.
func (d *demo) setup(ctx context.Context) error {
	var err error
	if d.dir, err = localenv.NewWorkDir("jsb-demo-"); err != nil {
		return err
	}

	// Building and starting the servers are independent: do both at once.
	var (
		wg                sync.WaitGroup
		relayBin, sinkBin string
		buildErr, envErr  error
	)
	wg.Go(func() { relayBin, sinkBin, buildErr = d.binaries(ctx) })
	wg.Go(func() { envErr = d.startServers(ctx) })
	wg.Wait()
	if err := errors.Join(buildErr, envErr); err != nil {
		return err
	}

	d.sides = [2]*side{
		{name: "system_a", peer: "system_b", url: d.opts.DatabaseA},
		{name: "system_b", peer: "system_a", url: d.opts.DatabaseB},
	}
	if d.pg != nil {
		for _, s := range d.sides {
			if err := d.pg.CreateDatabase(ctx, s.name); err != nil {
				return err
			}
			s.url = d.pg.URL(s.name)
		}
	}
	for _, s := range d.sides {
		if err := d.prepareDatabase(ctx, s); err != nil {
			return err
		}
	}
	if err := d.connectNATS(ctx); err != nil {
		return err
	}

	// Relays first: they provision the stream's publish subjects, which the
	// sinks' consumers filter on.
	for _, s := range d.sides {
		if s.relay, err = d.start(relayBin, "relay_"+s.name[len(s.name)-1:], []string{
			"DATABASE_URL=" + s.url,
			"APP_NAME=" + s.name,
			"DESTINATION_APP=" + s.peer,
			"REPLICATION_SLOT=jetstream_bridge_" + s.name, // slot names are cluster-wide: one per database
		}); err != nil {
			return err
		}
	}
	for _, s := range d.sides {
		if err := s.relay.waitReady(ctx, readyTimeout); err != nil {
			return err
		}
	}
	for _, s := range d.sides {
		if s.sink, err = d.start(sinkBin, "sink_"+s.name[len(s.name)-1:], []string{
			"DATABASE_URL=" + s.url,
			"APP_NAME=" + s.name,
			"DESTINATION_APP=" + s.peer, // consumes {peer}.sync.{name}, durable {name}-workers
			"HANDLER=" + handlerSpec,
		}); err != nil {
			return err
		}
	}
	for _, s := range d.sides {
		if err := s.sink.waitReady(ctx, readyTimeout); err != nil {
			return err
		}
	}
	for _, s := range d.sides {
		if s.base, err = readBaseline(ctx, s.db); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	d.subjBase, _ = subjectCounts(ctx, d.js, d.stream)
	return nil
}

// start starts one relay or sink with the settings every process shares.
func (d *demo) start(bin, name string, env []string) (*process, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env = append(env,
		"NATS_URLS="+d.natsURLs,
		"HTTP_ADDR="+addr,
		"LOG_FORMAT=json",
		"AUTO_PROVISION=true",
	)
	p, err := startProcess(name, bin, filepath.Join(localenv.LogDir(d.dir), name+".log"), addr, env)
	if err != nil {
		return nil, err
	}
	d.procs = append(d.procs, p)
	return p, nil
}

// startServers starts the local Postgres cluster and JetStream server unless
// the options name external ones.
func (d *demo) startServers(ctx context.Context) error {
	var err error
	if d.ns, d.natsURLs, err = localenv.UseOrStartNATS(d.opts.NATSURLs, filepath.Join(d.dir, "jetstream")); err != nil {
		return err
	}
	if d.opts.DatabaseA != "" {
		return nil
	}
	pg, err := d.startPostgres(ctx)
	if err != nil {
		return err
	}
	d.pg = pg
	return nil
}

// prepareDatabase checks the database can do logical replication and applies
// the outbox, inbox and demo schemas (the demo's triggers call
// jetstream_publish, which the outbox schema creates).
func (d *demo) prepareDatabase(ctx context.Context, s *side) error {
	var err error
	if s.db, err = localenv.OpenPool(ctx, s.url, 4, map[string]string{"application_name": "jetstream-bridge-demo"}); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	var walLevel string
	if err := s.db.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		return fmt.Errorf("%s: connect to %s: %w", s.name, config.Redact(s.url), err)
	}
	if walLevel != "logical" {
		return fmt.Errorf("%s: wal_level is %q; the relay needs wal_level=logical (ALTER SYSTEM SET wal_level = logical, then restart Postgres)", s.name, walLevel)
	}
	outbox, inbox, err := localenv.BridgeSchemas()
	if err != nil {
		return err
	}
	if err := localenv.ApplySQL(ctx, s.db, outbox, inbox, schemaSQL); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// connectNATS opens the demo's own connection, used to read stream counts.
func (d *demo) connectNATS(ctx context.Context) error {
	c := &config.Common{
		NATSURLs:     strings.Split(d.natsURLs, ","),
		NATSCreds:    d.getenv("NATS_CREDS"),
		NATSUser:     d.getenv("NATS_USER"),
		NATSPassword: d.getenv("NATS_PASSWORD"),
		NATSToken:    d.getenv("NATS_TOKEN"),
		NATSTLSCA:    d.getenv("NATS_TLS_CA"),
		NATSTLSCert:  d.getenv("NATS_TLS_CERT"),
		NATSTLSKey:   d.getenv("NATS_TLS_KEY"),
		NATSNKeySeed: d.getenv("NATS_NKEY_SEED"),
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	nc, err := config.ConnectNATS(cctx, c, "jetstream-bridge-demo", zerolog.Nop())
	if err != nil {
		return err
	}
	d.nc = nc
	d.js, err = jetstream.New(nc)
	return err
}

// load runs the writers until the duration ends or the first interrupt, and
// shows progress. A process that exits or a failed write ends it with an error.
func (d *demo) load(ctx context.Context) error {
	if d.opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.opts.Duration)
		defer cancel()
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		writeErr error
	)
	for _, s := range d.sides {
		s.w = newWriter(s.name, s.db, d.opts.Rate)
		wg.Go(func() {
			if err := s.w.run(ctx); err != nil {
				mu.Lock()
				writeErr = cmp.Or(writeErr, err)
				mu.Unlock()
				stop()
			}
		})
	}
	start := time.Now()
	err := d.watch(ctx, start, 500*time.Millisecond, func() bool { return false })
	stop()
	wg.Wait() // count only writes that are done
	if d.tty {
		fmt.Fprintln(d.out)
	}
	if err = cmp.Or(writeErr, err); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "stopped writing after %s: %d writes on system_a, %d on system_b\n",
		time.Since(start).Round(100*time.Millisecond), d.sides[0].w.written(), d.sides[1].w.written())
	return nil
}

// watch polls the counts every interval and prints the live line (at most
// twice a second on a terminal, every 2s otherwise). It returns nil when ctx
// ends or done reports true, and an error when a process exits or the counts
// cannot be read.
func (d *demo) watch(ctx context.Context, start time.Time, interval time.Duration, done func() bool) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	lastPrint := time.Time{}
	every := 2 * time.Second
	if d.tty {
		every = 500 * time.Millisecond
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for _, p := range d.procs {
			if p.exited() {
				return p.exitError()
			}
		}
		var st [2]sideStats
		for i, s := range d.sides {
			var err error
			if st[i], err = readStats(ctx, s.db, s.base, 5*time.Second); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		if time.Since(lastPrint) >= every {
			if d.tty {
				fmt.Fprint(d.out, "\r\033[K"+d.liveLine(start, st))
			} else {
				fmt.Fprintln(d.out, d.liveLine(start, st))
			}
			lastPrint = time.Now()
		}
		if done() {
			return nil
		}
	}
}

// liveLine is the one-line progress: writes per side, events applied on the
// other side, the lag (events still on their way), and write->apply latency over
// the last 5 seconds.
func (d *demo) liveLine(start time.Time, st [2]sideStats) string {
	a, b := d.sides[0], d.sides[1]
	wa, wb := written(a), written(b)
	return fmt.Sprintf("%6s  written A %d  B %d | applied A→B %d  B→A %d | lag %d/%d events | latency p50/p99 A→B %s  B→A %s",
		time.Since(start).Round(time.Second), wa, wb, st[1].applied, st[0].applied,
		max(wa-st[1].applied, 0), max(wb-st[0].applied, 0), st[1].latency, st[0].latency)
}

func written(s *side) int64 {
	if s.w == nil {
		return 0
	}
	return s.w.written()
}

// report is what verify found.
type report struct {
	written     [2]int64     // writes per side
	stats       [2]sideStats // final, latency over the whole run
	tables      []tableDiff
	subjects    map[string]uint64 // stream messages per subject added during the run; nil if unknown
	subjectsErr error
	waited      time.Duration
	timedOut    bool
}

// loops is how many outbox rows a side has beyond its own writes: events
// published while applying the other side's events (echoes).
func (r *report) loops(i int) int64 { return r.stats[i].outbox - r.written[i] }

// converged: every event applied on the other side, nothing echoed back,
// nothing dead or waiting, and both databases hold the same rows.
func (r *report) converged() bool {
	if r.subjectsErr != nil || r.timedOut {
		return false
	}
	if r.stats[1].applied != r.written[0] || r.stats[0].applied != r.written[1] || r.loops(0) != 0 || r.loops(1) != 0 {
		return false
	}
	for _, t := range r.tables {
		if !t.equal() {
			return false
		}
	}
	for i := range 2 {
		if r.stats[i].dead != 0 || r.stats[i].failed != 0 {
			return false
		}
	}
	return r.deadLetters() == 0
}

func (r *report) deadLetters() uint64 {
	var n uint64
	for subj, c := range r.subjects {
		if strings.HasSuffix(subj, ".sync.dlq") {
			n += c
		}
	}
	return n
}

// verify waits (bounded) until every event written on one side is applied on
// the other, then compares the databases.
func (d *demo) verify(ctx context.Context) (*report, error) {
	a, b := d.sides[0], d.sides[1]
	fmt.Fprintf(d.out, "waiting for both sides to apply every event (at most %s; Ctrl-C to skip) ...\n", d.opts.ConvergeTimeout)
	wctx, cancel := context.WithTimeout(ctx, d.opts.ConvergeTimeout)
	defer cancel()
	start := time.Now()
	caughtUpWith := func(ctx context.Context) bool {
		inA, errA := countApplied(ctx, a.db, a.base)
		inB, errB := countApplied(ctx, b.db, b.base)
		return errA == nil && errB == nil && inB >= written(a) && inA >= written(b)
	}
	caughtUp := func() bool { return caughtUpWith(wctx) }
	var err error
	if !caughtUp() {
		err = d.watch(wctx, start, 100*time.Millisecond, caughtUp)
		if d.tty {
			fmt.Fprintln(d.out)
		}
	}
	if err != nil {
		return nil, err
	}
	rep := &report{waited: time.Since(start), written: [2]int64{written(a), written(b)}}

	// Final numbers on a context of their own: a second Ctrl-C skips the
	// wait, not the report.
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	rep.timedOut = wctx.Err() != nil && !caughtUpWith(fctx)
	for i, s := range d.sides {
		if rep.stats[i], err = readStats(fctx, s.db, s.base, 0); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if rep.tables, err = compareTables(fctx, a.db, b.db); err != nil {
		return nil, err
	}
	if counts, err := subjectCounts(fctx, d.js, d.stream); err != nil {
		rep.subjectsErr = err
	} else {
		rep.subjects = map[string]uint64{}
		for subj, n := range counts {
			if n > d.subjBase[subj] {
				rep.subjects[subj] = n - d.subjBase[subj]
			}
		}
	}
	return rep, nil
}

// close stops the processes, the servers and removes the temporary
// directory (kept with --keep, or after a failure for its logs).
func (d *demo) close() {
	if len(d.procs) > 0 {
		fmt.Fprint(d.out, "stopping relays and sinks (SIGTERM) ... ")
		var wg sync.WaitGroup
		errs := make([]error, len(d.procs))
		for i, p := range d.procs {
			wg.Go(func() { errs[i] = p.stop(stopTimeout) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			fmt.Fprintf(d.out, "\n  %v\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		} else {
			fmt.Fprintln(d.out, "done")
		}
	}
	if d.nc != nil {
		d.nc.Close()
	}
	for _, s := range d.sides {
		if s != nil && s.db != nil {
			s.db.Close()
		}
	}
	if d.ns != nil {
		d.ns.Shutdown()
	}
	if d.pg != nil {
		if err := d.pg.Close(); err != nil {
			fmt.Fprintf(d.out, "stop postgres: %v\n", err)
		}
	}
	if d.dir == "" {
		return
	}
	if d.pg == nil && len(d.procs) > 0 {
		fmt.Fprintln(d.out, "left in your databases: schema demo, the outbox and inbox tables, and the replication slots\n"+
			"jetstream_bridge_system_a and jetstream_bridge_system_b, which retain WAL while no relay streams them:\n"+
			"  SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots\n"+
			"  WHERE slot_name IN ('jetstream_bridge_system_a', 'jetstream_bridge_system_b');\n"+
			"  DELETE FROM public.jetstream_bridge_slots\n"+
			"  WHERE slot_name IN ('jetstream_bridge_system_a', 'jetstream_bridge_system_b');")
	}
	if err := localenv.CloseWorkDir(d.out, d.dir, d.opts.Keep || d.failed); err != nil {
		fmt.Fprintln(d.out, err)
	}
}

// printTails shows the end of every process log after a failure.
func (d *demo) printTails() {
	for _, p := range d.procs {
		fmt.Fprintf(d.out, "\n--- last lines of %s (%s) ---\n%s\n", p.name, p.logPath, p.tail(15))
	}
	if d.pg != nil {
		fmt.Fprintf(d.out, "\n--- last lines of the Postgres log ---\n%s\n", d.pg.LogTail(10))
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
