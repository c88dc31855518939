package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// With --postgres-cpus the local Postgres cluster runs on the CPUs named and
// everything else (the bench, the JetStream server, relays and sinks) on the
// others: the topology of production, where the database has a host of its
// own, on one machine. A limit that is Postgres's alone then measures
// Postgres, and a sink's own CPU no longer comes out of it.

// usableCPUs is the set of CPUs this process may run on (a container's
// cpuset may not start at 0).
func usableCPUs() unix.CPUSet {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil || set.Count() == 0 {
		set.Zero()
		for c := range runtime.NumCPU() {
			set.Set(c)
		}
	}
	return set
}

// parseCPUs reads a list such as "1" or "2,3": CPUs this process may use,
// leaving at least one of them for the rest.
func parseCPUs(s string) ([]int, error) {
	usable := usableCPUs()
	var (
		cpus []int
		seen unix.CPUSet
	)
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n >= len(seen)*64 {
			return nil, fmt.Errorf("%q: expected CPU numbers, e.g. 1 or 2,3", s)
		}
		if !usable.IsSet(n) {
			return nil, fmt.Errorf("%q: CPU %d is not one this process may use", s, n)
		}
		if !seen.IsSet(n) {
			seen.Set(n)
			cpus = append(cpus, n)
		}
	}
	if seen.Count() >= usable.Count() {
		return nil, fmt.Errorf("%q: this process may use %d CPUs; leave at least one for the rest", s, usable.Count())
	}
	return cpus, nil
}

// cpuSets splits the usable CPUs into Postgres's and the rest's.
func cpuSets(pg []int) (pgSet, rest unix.CPUSet) {
	for _, c := range pg {
		pgSet.Set(c)
	}
	rest = usableCPUs()
	for _, c := range pg {
		rest.Clear(c)
	}
	return pgSet, rest
}

// pinTree sets the affinity of every thread of pid and of its descendants.
// Processes forked later inherit it from their parent.
func pinTree(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return fmt.Errorf("pin process %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d of process %d: %w", tid, pid, err)
		}
	}
	for _, child := range childPIDs(pid) {
		if err := pinTree(child, set); err != nil {
			return err
		}
	}
	return nil
}

// childPIDs lists the children of pid.
func childPIDs(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	for _, t := range tasks {
		raw, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "task", t.Name(), "children"))
		for f := range strings.FieldsSeq(string(raw)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// pin applies --postgres-cpus: the cluster (postmaster and every process it
// started) on its CPUs, this process and the JetStream server on the rest.
// Relays and sinks, started by this process later, inherit the rest.
func (b *bench) pin() error {
	if len(b.opts.PostgresCPUs) == 0 {
		return nil
	}
	pm := b.postmasterPID()
	if pm <= 0 {
		return fmt.Errorf("--postgres-cpus needs the local cluster (not --database-url)")
	}
	pgSet, rest := cpuSets(b.opts.PostgresCPUs)
	if err := pinTree(pm, &pgSet); err != nil {
		return err
	}
	if err := pinTree(os.Getpid(), &rest); err != nil {
		return err
	}
	if pid := b.natsPID(); pid > 0 {
		if err := pinTree(pid, &rest); err != nil {
			return err
		}
	}
	return nil
}

// topology describes --postgres-cpus for the report.
func topology(pg []int) string {
	if len(pg) == 0 {
		return "every process on every CPU"
	}
	_, rest := cpuSets(pg)
	var others []string
	for c := range len(rest) * 64 {
		if rest.IsSet(c) {
			others = append(others, strconv.Itoa(c))
		}
	}
	var mine []string
	for _, c := range pg {
		mine = append(mine, strconv.Itoa(c))
	}
	return fmt.Sprintf("Postgres on CPU %s, everything else on CPU %s (--postgres-cpus)", strings.Join(mine, ","), strings.Join(others, ","))
}
