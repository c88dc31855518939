package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// CPU accounting from /proc: where the machine's CPU went during a
// measurement. On a 2-core machine shared by relay, sink, Postgres, NATS and
// the load generator this, more than any profile, says what limits a result.

const clockTicks = 100 // USER_HZ; 100 on every Linux we run on

// cpuSnap is cumulative CPU time, in seconds, at one moment.
type cpuSnap struct {
	at                    time.Time
	relay, sink, pg, nats float64
	bench                 float64
	busy                  float64 // the whole machine, all cores
}

// CPUUse is where CPU went between two snapshots, in percent of one core
// (200 = both cores of a 2-core machine). Others is everything not ours:
// other users of a shared machine. Negative or NaN values mean unknown.
type CPUUse struct {
	Relay    float64 `json:"relay_pct"`
	Sink     float64 `json:"sink_pct"`
	Postgres float64 `json:"postgres_pct"`
	NATS     float64 `json:"nats_pct"`
	Bench    float64 `json:"bench_pct"`
	Machine  float64 `json:"machine_busy_pct"`
	Others   float64 `json:"others_pct"`
	Cores    int     `json:"cores"`
}

// cpuSnapshot reads the CPU times of relay and sink (nil when not running),
// of our Postgres cluster (postmaster, its children and the children it
// reaped), of our JetStream server, of this process (the load generator) and
// of the machine.
func (b *bench) cpuSnapshot(relay, sink *proc) cpuSnap {
	s := cpuSnap{at: time.Now(), relay: math.NaN(), sink: math.NaN(), pg: math.NaN(), nats: math.NaN()}
	if relay != nil && !relay.exited() {
		s.relay, _ = procCPU(relay.pid(), false)
	}
	if sink != nil && !sink.exited() {
		s.sink, _ = procCPU(sink.pid(), false)
	}
	if pid := b.natsPID(); pid > 0 {
		s.nats, _ = procCPU(pid, false)
	}
	s.bench, _ = procCPU(os.Getpid(), false)
	if pm := b.postmasterPID(); pm > 0 {
		s.pg = clusterCPU(pm)
	}
	s.busy = machineBusy()
	return s
}

// use returns the CPU used from s to e.
func (s cpuSnap) use(e cpuSnap) CPUUse {
	wall := e.at.Sub(s.at).Seconds()
	pct := func(a, b float64) float64 {
		if math.IsNaN(a) || math.IsNaN(b) || wall <= 0 {
			return math.NaN()
		}
		return (b - a) / wall * 100
	}
	u := CPUUse{Relay: pct(s.relay, e.relay), Sink: pct(s.sink, e.sink), Postgres: pct(s.pg, e.pg),
		NATS: pct(s.nats, e.nats), Bench: pct(s.bench, e.bench), Machine: pct(s.busy, e.busy), Cores: runtime.NumCPU()}
	ours := 0.0
	for _, v := range []float64{u.Relay, u.Sink, u.Postgres, u.NATS, u.Bench} {
		if !math.IsNaN(v) {
			ours += v
		}
	}
	u.Others = math.Max(u.Machine-ours, 0)
	return u
}

// String is the compact form for the table notes.
func (u CPUUse) String() string {
	var parts []string
	add := func(name string, v float64) {
		if !math.IsNaN(v) {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", name, v))
		}
	}
	add("relay", u.Relay)
	add("sink", u.Sink)
	add("postgres", u.Postgres)
	add("nats", u.NATS)
	add("bench", u.Bench)
	add("others", u.Others)
	s := fmt.Sprintf("cpu (%% of one core, %d cores): %s; machine busy %.0f%%", u.Cores, strings.Join(parts, ", "), u.Machine)
	if u.Others >= 50 {
		s += " — BUSY MACHINE: other processes took half a core or more, figures are low"
	}
	return s
}

// postmasterPID reads the local cluster's postmaster.pid; 0 for a given
// database URL.
func (b *bench) postmasterPID() int {
	if b.pg == nil {
		return 0
	}
	raw, err := os.ReadFile(filepath.Join(b.pg.Dir(), "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// procStat returns a process's parent and its user+system CPU seconds, and
// those of its reaped children.
func procStat(pid int) (ppid int, self, children float64, err error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 15 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	num := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	ppid, _ = strconv.Atoi(f[1])
	return ppid, (num(f[11]) + num(f[12])) / clockTicks, (num(f[13]) + num(f[14])) / clockTicks, nil
}

func procCPU(pid int, withChildren bool) (float64, error) {
	_, self, children, err := procStat(pid)
	if withChildren {
		self += children
	}
	return self, err
}

// clusterCPU sums the postmaster (with reaped children) and its live children.
func clusterCPU(postmaster int) float64 {
	total, err := procCPU(postmaster, true)
	if err != nil {
		return math.NaN()
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return math.NaN()
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == postmaster {
			continue
		}
		ppid, self, _, err := procStat(pid)
		if err == nil && ppid == postmaster {
			total += self
		}
	}
	return total
}

// machineBusy is the machine's non-idle CPU seconds since boot, all cores.
func machineBusy() float64 {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return math.NaN()
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return math.NaN()
	}
	busy := 0.0
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / clockTicks
}

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// schedStat is a thread group's time on CPU and time runnable but waiting
// for a CPU (run-queue delay), from /proc/PID/task/*/schedstat, in seconds.
type schedStat struct {
	at            time.Time
	onCPU, waited float64
	ok            bool
}

func readSchedStat(pid int) schedStat {
	s := schedStat{at: time.Now()}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return s
	}
	for _, t := range tasks {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw))
		if len(f) < 2 {
			continue
		}
		run, _ := strconv.ParseFloat(f[0], 64)
		wait, _ := strconv.ParseFloat(f[1], 64)
		s.onCPU += run / 1e9
		s.waited += wait / 1e9
		s.ok = true
	}
	return s
}

// since returns CPU use and run-queue wait between two readings, in percent
// of the wall time.
func (s schedStat) since(e schedStat) (cpu, wait float64) {
	wall := e.at.Sub(s.at).Seconds()
	if !s.ok || !e.ok || wall <= 0 {
		return math.NaN(), math.NaN()
	}
	return (e.onCPU - s.onCPU) / wall * 100, (e.waited - s.waited) / wall * 100
}

// costs is CPU time per event, in µs, of each of our processes during a
// window that moved events at a rate: what a result costs the machine. On
// cores that every process shares, a CPU-bound rate is the cores' time
// divided by the sum, so comparing sums says how far apart two rates can be.
type costs struct {
	Relay, Sink, Postgres, NATS, Bench float64
}

// perEvent converts u, measured while events moved at rate ev/s, to costs;
// unknown shares are 0.
func (u CPUUse) perEvent(rate float64) costs {
	us := func(pct float64) float64 {
		if math.IsNaN(pct) || rate <= 0 {
			return 0
		}
		return pct / 100 / rate * 1e6
	}
	return costs{Relay: us(u.Relay), Sink: us(u.Sink), Postgres: us(u.Postgres), NATS: us(u.NATS), Bench: us(u.Bench)}
}

func (c costs) total() float64 { return c.Relay + c.Sink + c.Postgres + c.NATS + c.Bench }

// String lists the non-zero shares and the sum.
func (c costs) String() string {
	var parts []string
	for _, p := range []struct {
		name string
		v    float64
	}{{"relay", c.Relay}, {"sink", c.Sink}, {"postgres", c.Postgres}, {"nats", c.NATS}, {"bench", c.Bench}} {
		if p.v >= 0.5 {
			parts = append(parts, fmt.Sprintf("%s %.0f", p.name, p.v))
		}
	}
	return fmt.Sprintf("%s = %.0f µs", strings.Join(parts, " + "), c.total())
}
