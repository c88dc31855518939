package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

// printHeader says what runs where, once everything is up.
func (d *demo) printHeader() {
	w := d.out
	fmt.Fprintln(w)
	for _, s := range d.sides {
		fmt.Fprintf(w, "  %s  %s\n", s.name, config.Redact(s.url))
		for _, p := range []*process{s.relay, s.sink} {
			fmt.Fprintf(w, "            %-7s http://%s/metrics  log %s\n", p.name, p.addr, p.logPath)
		}
	}
	where := "embedded JetStream, store in " + filepath.Join(d.dir, "jetstream")
	if d.ns == nil {
		where = "external"
	}
	fmt.Fprintf(w, "  NATS      %s (%s), stream %s\n", redactNATS(d.natsURLs), where, d.stream)
	if d.pg != nil {
		fmt.Fprintf(w, "  Postgres  local cluster in %s (log %s)\n", d.pg.Dir(), filepath.Join(d.pg.Dir(), "postgres.log"))
	}
	a, b := d.sides[0], d.sides[1]
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  %s writes -> outbox -> %s -> %s -> %s -> %s on %s\n", a.name, a.relay.name, a.subject(), b.sink.name, handlerSpec, b.name)
	fmt.Fprintf(w, "  %s writes -> outbox -> %s -> %s -> %s -> %s on %s\n", b.name, b.relay.name, b.subject(), a.sink.name, handlerSpec, a.name)
	fmt.Fprintln(w, "  (rows a sink applies are not published again: jetstream_publish() skips them while jetstream_bridge.applying is set)")
	fmt.Fprintln(w)
	until := "until Ctrl-C"
	if d.opts.Duration > 0 {
		until = "for " + d.opts.Duration.String()
	}
	fmt.Fprintf(w, "writing about %d rows/s on each side %s: new and updated organizations and users,\n"+
		"including updates of rows that came from the other side (last writer wins on updated_at)\n", d.opts.Rate, until)
}

// redactNATS hides credentials in NATS URLs.
func redactNATS(urls string) string {
	return strings.Join(config.RedactNATSURLs(strings.Split(urls, ",")), ",")
}

// printSummary prints the per-direction table, the table comparison and the
// final machine-readable result line.
func (d *demo) printSummary(r *report) {
	w := d.out
	a, b := d.sides[0], d.sides[1]
	col := func(label string, va, vb any) {
		fmt.Fprintf(w, "  %s%s%v\n", padRight(label, 30), padRight(fmt.Sprint(va), 24), vb)
	}
	fmt.Fprintln(w)
	switch {
	case r.timedOut:
		fmt.Fprintf(w, "summary (stopped waiting %s after writing stopped, with events still missing)\n", ms(r.waited))
	case r.waited < 50*time.Millisecond:
		fmt.Fprintln(w, "summary (every event had arrived when writing stopped)")
	default:
		fmt.Fprintf(w, "summary (the last events arrived %s after writing stopped)\n", ms(r.waited))
	}
	col("", a.name+" → "+b.name, b.name+" → "+a.name)
	col("written (outbox events)", written(a), written(b))
	col("  organizations new/updated", fmt.Sprintf("%d / %d", a.w.orgsCreated.Load(), a.w.orgsUpdated.Load()),
		fmt.Sprintf("%d / %d", b.w.orgsCreated.Load(), b.w.orgsUpdated.Load()))
	col("  users new/updated", fmt.Sprintf("%d / %d", a.w.usersCreated.Load(), a.w.usersUpdated.Load()),
		fmt.Sprintf("%d / %d", b.w.usersCreated.Load(), b.w.usersUpdated.Load()))
	col("  updates of the other's rows", a.w.foreignUpdates.Load(), b.w.foreignUpdates.Load())
	if r.subjects != nil {
		col("stored in the stream", r.subjects[a.subject()], r.subjects[b.subject()])
	} else {
		col("stored in the stream", "unknown", "unknown")
	}
	col("applied on the other side", r.stats[1].applied, r.stats[0].applied)
	col("dead-lettered", r.stats[1].dead, r.stats[0].dead)
	col("echoed back (loops)", r.loops(0), r.loops(1))
	lat := func(l latency) string {
		if l.n == 0 {
			return "-"
		}
		return fmt.Sprintf("%s / %s / %s", ms(l.p50), ms(l.p99), ms(l.max))
	}
	col("latency p50 / p99 / max", lat(r.stats[1].latency), lat(r.stats[0].latency))
	fmt.Fprintln(w, "  (latency: write on one side to the sink applying it on the other)")
	fmt.Fprintln(w)

	differing := 0
	for _, t := range r.tables {
		verdict := "identical"
		if !t.equal() {
			verdict = fmt.Sprintf("DIFFERENT: %d only on %s, %d only on %s, %d differ", t.onlyA, a.name, t.onlyB, b.name, t.differ)
		}
		differing += t.onlyA + t.onlyB + t.differ
		fmt.Fprintf(w, "  %-14s %d rows on %s, %d on %s: %s\n", t.table, t.rowsA, a.name, t.rowsB, b.name, verdict)
		for _, e := range t.examples {
			fmt.Fprintf(w, "      %s\n", e)
		}
	}
	if n := r.deadLetters(); n > 0 {
		fmt.Fprintf(w, "  %d dead letters in the stream: list them with `sink dlq list` (env of the sink, see its log)\n", n)
	}
	if r.subjectsErr != nil {
		fmt.Fprintf(w, "  cannot read the stream: %v\n", r.subjectsErr)
	}
	if r.timedOut {
		fmt.Fprintf(w, "  stopped waiting after %s: %d events of %s and %d of %s not applied yet\n", ms(r.waited),
			max(written(a)-r.stats[1].applied, 0), a.name, max(written(b)-r.stats[0].applied, 0), b.name)
	}
	for i, s := range d.sides {
		if l := r.loops(i); l != 0 {
			fmt.Fprintf(w, "  %s's outbox holds %d events for %d local writes: applied events were published again\n", s.name, r.stats[i].outbox, written(s))
		}
		if r.stats[i].failed > 0 {
			fmt.Fprintf(w, "  %s: %d events failed and wait for a retry (see %s)\n", s.name, r.stats[i].failed, s.sink.logPath)
		}
	}
	fmt.Fprintln(w)
	verdict := "CONVERGED: both databases hold the same rows, every event applied once, nothing echoed back"
	if !r.converged() {
		verdict = "NOT CONVERGED"
	}
	fmt.Fprintln(w, verdict)
	fmt.Fprintf(w, "result: converged=%t a_to_b=%d b_to_a=%d loops=%d dead=%d differing_rows=%d\n",
		r.converged(), r.stats[1].applied, r.stats[0].applied, max(r.loops(0), 0)+max(r.loops(1), 0),
		r.stats[0].dead+r.stats[1].dead+int64(r.deadLetters()), differing)
}
