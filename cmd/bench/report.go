package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// result is one measured quantity: a value per repetition, its median, and
// its ratio to a limit measured in step 1.
type result struct {
	Step   int       `json:"step"`
	ID     string    `json:"id"`
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
	Median float64   `json:"median"`
	// Limits are the step-1 results this one is compared with; their
	// medians are summed (end-to-end latency is bounded by a publish and a
	// commit).
	Limits []string `json:"limits,omitempty"`
	Ratio  *float64 `json:"ratio,omitempty"`
	Notes  []string `json:"notes,omitempty"`
	// Series is a time series of the first repetition (lag every 100 ms).
	Series []float64 `json:"series,omitempty"`
}

// target is one of the project's performance targets, or (Info) a
// comparison reported next to them that is not a target.
type target struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Met   *bool  `json:"met"` // nil: not measured in this run, or Info
	// Info marks a comparison shown for context only: Met stays nil and
	// Measured says whether this run measured it.
	Info     bool   `json:"info,omitempty"`
	Measured bool   `json:"measured"`
	Detail   string `json:"detail,omitempty"`
}

// status is the TARGETS column: MET / NOT MET, info, or n/a.
func (t target) status() string {
	switch {
	case !t.Measured:
		return "n/a (not measured)"
	case t.Info || t.Met == nil:
		return "info (not a target)"
	case *t.Met:
		return "MET"
	default:
		return "NOT MET"
	}
}

// report collects results in the order they were first measured.
type report struct {
	Date      string         `json:"date"`
	Machine   map[string]any `json:"machine"`
	Settings  map[string]any `json:"settings"`
	LoadStart string         `json:"load_average_start"`
	LoadEnd   string         `json:"load_average_end"`
	Duration  string         `json:"duration"`
	Steps     []int          `json:"steps"`
	Results   []*result      `json:"results"`
	Targets   []target       `json:"targets"`

	byID  map[string]*result
	start time.Time
}

func (r *report) begin(b *bench) {
	r.start = time.Now()
	r.Date = r.start.UTC().Format(time.RFC3339)
	r.LoadStart = loadAvg()
	r.Machine = machineFacts()
	r.Machine["postgres"] = b.pgVersion
	r.Machine["nats_server"] = server.VERSION
	if b.natsProc == nil {
		r.Machine["nats_server"] = "external"
	}
	o := b.opts
	pgMode := "local cluster (localenv), fsync=" + map[bool]string{true: "on", false: "off"}[o.Fsync] + ", synchronous_commit=on, max_wal_size=4GB"
	if o.DatabaseURL != "" {
		pgMode = "given database"
	}
	natsMode := b.natsDescription()
	r.Settings = map[string]any{
		"reps": o.Reps, "events": o.Events, "sink_events": o.SinkEvents, "duration": o.Duration.String(),
		"limit_duration": o.LimitDuration.String(), "writers": o.Writers, "rates": o.Rates, "e2e_rates": o.E2ERates,
		"concurrency": o.Concurrency, "e2e_concurrency": o.E2EConc, "pollers": o.Pollers, "poll_modes": o.PollModes,
		"poll_batch": o.PollBatch, "poll_interval": o.PollInterval.String(), "max_inflight": o.MaxInflight, "quick": o.Quick,
		"postgres": pgMode, "nats": natsMode, "profiling": o.Profile != "",
		"relay_env": o.RelayEnv, "sink_env": o.SinkEnv, "cpus": topology(o.PostgresCPUs),
	}
	r.Steps = o.stepsRun()
	fmt.Fprintf(b.out, "ready: postgres %s, nats-server %s, %d cores, load average %s\n",
		b.pgVersion, r.Machine["nats_server"], runtime.NumCPU(), r.LoadStart)
}

func (r *report) end(b *bench) {
	r.LoadEnd = loadAvg()
	r.Duration = time.Since(r.start).Round(time.Second).String()
	for _, res := range r.Results {
		res.Median = median(res.Values)
		if len(res.Limits) > 0 {
			lim := 0.0
			for _, id := range res.Limits {
				l := r.byID[id]
				if l == nil {
					lim = math.NaN()
					break
				}
				lim += median(l.Values)
			}
			if v := res.Median / lim; !math.IsNaN(v) && !math.IsInf(v, 0) {
				res.Ratio = &v
			}
		}
	}
	r.Targets = evaluateTargets(r, b.opts)
}

// add records one repetition's value of a result.
func (r *report) add(step int, id, name, unit string, v float64, limits ...string) *result {
	if r.byID == nil {
		r.byID = map[string]*result{}
	}
	res := r.byID[id]
	if res == nil {
		res = &result{Step: step, ID: id, Name: name, Unit: unit, Limits: limits}
		r.byID[id] = res
		r.Results = append(r.Results, res)
	}
	res.Values = append(res.Values, v)
	return res
}

// note attaches a remark (CPU use, anomalies) to a result.
func (r *report) note(id, format string, args ...any) {
	if res := r.byID[id]; res != nil {
		res.Notes = append(res.Notes, fmt.Sprintf(format, args...))
	}
}

func (r *report) median(id string) float64 {
	if res := r.byID[id]; res != nil {
		return median(res.Values)
	}
	return math.NaN()
}

// print writes the table, the targets and the notes.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nJetStream Bridge benchmark — %s\n", r.Date)
	fmt.Fprintf(w, "machine: %v cores (%v), %v, %v, Go %v, Postgres %v, nats-server %v\n",
		r.Machine["cores"], r.Machine["cpu"], r.Machine["memory"], r.Machine["kernel"], r.Machine["go"],
		r.Machine["postgres"], r.Machine["nats_server"])
	fmt.Fprintf(w, "postgres: %v; nats: %v\n", r.Settings["postgres"], r.Settings["nats"])
	fmt.Fprintf(w, "cpus: %v\n", r.Settings["cpus"])
	if len(r.Settings["relay_env"].([]string))+len(r.Settings["sink_env"].([]string)) > 0 {
		fmt.Fprintf(w, "extra environment: relay %v, sink %v\n", r.Settings["relay_env"], r.Settings["sink_env"])
	}
	fmt.Fprintf(w, "load average: %s at start, %s at end; took %s; median of %v repetition(s)\n\n",
		r.LoadStart, r.LoadEnd, r.Duration, r.Settings["reps"])

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tMEASUREMENT\tMEDIAN\tREPETITIONS\tVS LIMIT")
	step := 0
	for _, res := range r.Results {
		if res.Step != step && step != 0 {
			fmt.Fprintln(tw, "\t\t\t\t")
		}
		step = res.Step
		reps := make([]string, len(res.Values))
		for i, v := range res.Values {
			reps[i] = formatValue(v, res.Unit, false)
		}
		ratio := ""
		if res.Ratio != nil {
			ratio = fmt.Sprintf("%.2f× %s", *res.Ratio, strings.Join(res.Limits, "+"))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", res.Step, res.Name, formatValue(median(res.Values), res.Unit, true),
			strings.Join(reps, " / "), ratio)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nTARGETS")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Value, t.status(), t.Detail)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nNOTES (first repetition unless marked)")
	for _, res := range r.Results {
		for _, n := range res.Notes {
			fmt.Fprintf(w, "  [%s] %s\n", res.ID, n)
		}
	}
	fmt.Fprintln(w, "\nVS LIMIT is the median divided by the named step-1 limit(s), summed: throughputs as a")
	fmt.Fprintln(w, "fraction of the raw rate, latencies as a multiple of the raw round trip at the same percentile.")
}

// formatValue renders v in unit; long adds the unit.
func formatValue(v float64, unit string, long bool) string {
	if math.IsNaN(v) {
		return "-"
	}
	var s string
	switch unit {
	case "ev/s", "msg/s", "ev":
		s = thousands(int64(math.Round(v)))
	case "ms", "µs":
		switch {
		case v >= 100:
			s = strconv.FormatFloat(v, 'f', 0, 64)
		case v >= 10:
			s = strconv.FormatFloat(v, 'f', 1, 64)
		default:
			s = strconv.FormatFloat(v, 'f', 2, 64)
		}
	case "MB", "kB":
		s = strconv.FormatFloat(v, 'f', 1, 64)
	case "yes/no":
		if v >= 0.5 {
			return "yes"
		}
		return "no"
	default:
		s = strconv.FormatFloat(v, 'g', 4, 64)
	}
	if long && unit != "" {
		s += " " + unit
	}
	return s
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func (r *report) writeJSON(path string) error {
	clean := func(f float64) any {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return f
	}
	type jsonResult struct {
		*result
		Values []any `json:"values"`
		Median any   `json:"median"`
		Series []any `json:"series,omitempty"`
	}
	out := struct {
		*report
		Results []jsonResult `json:"results"`
	}{report: r}
	for _, res := range r.Results {
		jr := jsonResult{result: res, Median: clean(res.Median)}
		for _, v := range res.Values {
			jr.Values = append(jr.Values, clean(v))
		}
		for _, v := range res.Series {
			jr.Series = append(jr.Series, clean(v))
		}
		out.Results = append(out.Results, jr)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// machineFacts describes the machine for the report.
func machineFacts() map[string]any {
	m := map[string]any{"cores": runtime.NumCPU(), "go": runtime.Version(), "goos": runtime.GOOS + "/" + runtime.GOARCH}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(raw), "\n")
		f := strings.Fields(line)
		if len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m["memory"] = fmt.Sprintf("%.0f GiB RAM", kb/1024/1024)
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = "Linux " + strings.TrimSpace(string(raw))
	}
	return m
}

// evaluateTargets checks the project's targets against the medians.
func evaluateTargets(r *report, o *Options) []target {
	var out []target
	check := func(name string, ok bool, measured bool, value, detail string) {
		t := target{Name: name, Value: value, Measured: measured, Detail: detail}
		if measured {
			t.Met = &ok
		}
		out = append(out, t)
	}
	info := func(name string, measured bool, value, detail string) {
		out = append(out, target{Name: name, Value: value, Info: true, Measured: measured, Detail: detail})
	}
	have := func(ids ...string) bool {
		for _, id := range ids {
			if math.IsNaN(r.median(id)) {
				return false
			}
		}
		return true
	}

	drain, js := r.median("relay_drain_rate"), r.median("js_publish_rate")
	check("relay drain ≥ 0.7 × raw JetStream publish rate", drain >= 0.7*js, have("relay_drain_rate", "js_publish_rate"),
		fmt.Sprintf("%.2f×", drain/js), fmt.Sprintf("%s vs %s ev/s", formatValue(drain, "ev/s", false), formatValue(js, "ev/s", false)))

	rss := r.median("relay_drain_rss")
	check(fmt.Sprintf("relay peak RSS < 150 MB while draining %s", thousands(int64(o.Events))), rss < 150,
		have("relay_drain_rss"), fmt.Sprintf("%.1f MB", rss), "VmHWM")

	maxID := "steady_" + rateLabel(0)
	keeps := r.median(maxID + "_keeps_up")
	check("steady state keeps up with the fastest writers (lag flat)", keeps >= 0.5, have(maxID+"_keeps_up"),
		formatValue(keeps, "yes/no", false), fmt.Sprintf("writers %s ev/s, relay %s ev/s, lag slope %.0f ev/s",
			formatValue(r.median(maxID+"_write_rate"), "ev/s", false), formatValue(r.median(maxID+"_relay_rate"), "ev/s", false),
			r.median(maxID+"_lag_slope")))
	p99 := r.median("steady_5000_p99")
	check("steady state p99 commit→ack ≤ 25 ms at 5k/s", p99 <= 25, have("steady_5000_p99"),
		fmt.Sprintf("%.2f ms", p99), fmt.Sprintf("relay histogram: %.1f%% ≤ 25 ms", r.median("steady_5000_hist_le25")))

	sinkID := fmt.Sprintf("sink_sql_c%d_rate", 16)
	sink, pg := r.median(sinkID), r.median("pg_1row_rate")
	check("sink ≥ 0.7 × raw Postgres 1-row tx rate at CONCURRENCY 16", sink >= 0.7*pg, have(sinkID, "pg_1row_rate"),
		fmt.Sprintf("%.2f×", sink/pg), fmt.Sprintf("no-op SQL handler %s vs %s ev/s", formatValue(sink, "ev/s", false), formatValue(pg, "ev/s", false)))

	top := 16
	if len(o.Concurrency) > 0 {
		top = o.Concurrency[len(o.Concurrency)-1]
	}
	for _, t := range []struct {
		kind, what string
		ratio      float64
	}{
		{"upsert", "SQL sink (upsert handler) ≥ %.2f × the same SQL straight to Postgres at CONCURRENCY %d", 0.85},
		{"http", "webhook sink ≥ %.2f × the lesser of bare HTTP client and inbox rows alone at CONCURRENCY %d", 0.7},
	} {
		got, lim := r.median(fmt.Sprintf("sink_%s_c%d_rate", t.kind, top)), r.median(fmt.Sprintf("direct_%s_c%d_rate", t.kind, top))
		detail := fmt.Sprintf("%s vs %s ev/s", formatValue(got, "ev/s", false), formatValue(lim, "ev/s", false))
		if ceil := r.median(fmt.Sprintf("%s_ceiling_c%d", t.kind, top)); !math.IsNaN(ceil) {
			detail += fmt.Sprintf("; at most %.2f× on these shared cores (step 4 notes)", ceil)
		}
		check(fmt.Sprintf(t.what, t.ratio, top), got >= t.ratio*lim, !math.IsNaN(got) && !math.IsNaN(lim),
			fmt.Sprintf("%.2f×", got/lim), detail)
	}

	memR, memS := r.median("mem_relay_rss"), r.median("mem_sink_rss")
	check(fmt.Sprintf("relay peak RSS ≤ 100 MB draining one %s-row transaction", thousands(int64(o.MemRows))), memR <= 100,
		have("mem_relay_rss"), fmt.Sprintf("%.1f MB", memR), "VmHWM")
	check(fmt.Sprintf("sink peak RSS ≤ 300 MB, %s B events at CONCURRENCY %d", thousands(int64(o.MemEventBytes)), o.MemConc), memS <= 300,
		have("mem_sink_rss"), fmt.Sprintf("%.1f MB", memS), "VmHWM")

	e2e := r.median("e2e_1000_p99")
	check("end-to-end p99 commit→applied ≤ 50 ms at 1k/s", e2e <= 50, have("e2e_1000_p99"), fmt.Sprintf("%.2f ms", e2e), "")

	// The polling target is checked against the classic poller, the baseline
	// the project names (the Ruby gem's flush_outbox); the tuned poller is
	// shown next to it for context.
	relayLat := r.median("steady_1000_p99")
	classic, classicLat := bestPolling(r, o, "classic")
	measured := !math.IsNaN(classic) && !math.IsNaN(drain) && !math.IsNaN(classicLat) && !math.IsNaN(relayLat)
	check("relay ≥ 3× polling baseline drain rate, with lower p99 latency", drain >= 3*classic && relayLat < classicLat, measured,
		fmt.Sprintf("%.2f×", drain/classic), fmt.Sprintf("best classic polling (sync publish per row, as the gem) %s ev/s; "+
			"p99 at 1k/s relay %.2f ms vs classic polling %.2f ms", formatValue(classic, "ev/s", false), relayLat, classicLat))
	tuned, tunedLat := bestPolling(r, o, "tuned")
	measured = !math.IsNaN(tuned) && !math.IsNaN(drain) && !math.IsNaN(tunedLat) && !math.IsNaN(relayLat)
	detail := fmt.Sprintf("drain relay %s vs best tuned polling %s ev/s; p99 at 1k/s relay %.2f ms vs tuned polling %.2f ms",
		formatValue(drain, "ev/s", false), formatValue(tuned, "ev/s", false), relayLat, tunedLat)
	if measured {
		detail += " (relay's p99 " + lowerHigher(relayLat, tunedLat) + ")"
	}
	info("relay vs tuned polling (async publish window)", measured, fmt.Sprintf("%.2f×", drain/tuned), detail)

	msgW, tblW := r.median("msg_writer_message_rate"), r.median("msg_writer_table_rate")
	check("message-mode writers ≥ 1.5 × table-mode writers (1-row tx, relay streaming, rows pruned and vacuumed)", msgW >= 1.5*tblW, have("msg_writer_message_rate", "msg_writer_table_rate"),
		fmt.Sprintf("%.2f×", msgW/tblW), fmt.Sprintf("jetstream_publish %s vs %s ev/s", formatValue(msgW, "ev/s", false), formatValue(tblW, "ev/s", false)))
	msgA, tblA := r.median("msg_writer_bare_message_rate"), r.median("msg_writer_bare_table_rate")
	info("message-mode vs table-mode writers alone (no relay, no pruning)", have("msg_writer_bare_message_rate", "msg_writer_bare_table_rate"),
		fmt.Sprintf("%.2f×", msgA/tblA), fmt.Sprintf("jetstream_publish %s vs %s ev/s", formatValue(msgA, "ev/s", false), formatValue(tblA, "ev/s", false)))
	floor := r.median("msg_writer_bare_floor_rate")
	info("ceiling: a bare transactional message vs table-mode writers alone (no helper can beat it)", have("msg_writer_bare_floor_rate", "msg_writer_bare_table_rate"),
		fmt.Sprintf("%.2f×", floor/tblA), fmt.Sprintf("pg_logical_emit_message %s vs jetstream_publish %s ev/s", formatValue(floor, "ev/s", false), formatValue(tblA, "ev/s", false)))
	msgD, tblD := r.median("msg_drain_message_rate"), r.median("msg_drain_table_rate")
	check("relay drain in message mode not lower than in table mode", msgD >= tblD, have("msg_drain_message_rate", "msg_drain_table_rate"),
		fmt.Sprintf("%.2f×", msgD/tblD), fmt.Sprintf("%s vs %s ev/s", formatValue(msgD, "ev/s", false), formatValue(tblD, "ev/s", false)))
	return out
}

// bestPolling returns the highest drain rate and the lowest p99 at 1000/s of
// mode's pollers over the --pollers counts (possibly of different counts);
// NaN when the mode was not measured.
func bestPolling(r *report, o *Options, mode string) (drain, p99 float64) {
	drain, p99 = math.NaN(), math.NaN()
	for _, n := range o.Pollers {
		id := pollID(mode, n)
		if v := r.median(id + "_drain_rate"); !math.IsNaN(v) && (math.IsNaN(drain) || v > drain) {
			drain = v
		}
		if v := r.median(id + "_1000_p99"); !math.IsNaN(v) && (math.IsNaN(p99) || v < p99) {
			p99 = v
		}
	}
	return drain, p99
}

// lowerHigher says how a compares with b: "lower", "higher" or "equal".
func lowerHigher(a, b float64) string {
	switch {
	case a < b:
		return "lower"
	case a > b:
		return "higher"
	default:
		return "equal"
	}
}

// rateLabel names a writer rate in result ids: "1000", or "max".
func rateLabel(rate int) string {
	if rate == 0 {
		return "max"
	}
	return strconv.Itoa(rate)
}
