package chaos

import (
	"math/rand/v2"
	"time"
)

// Fault is a kind of injected failure.
type Fault string

const (
	// RelayFailover kills (SIGKILL) the relay that holds the replication
	// slot; the standby takes over; the killed one restarts after the pause
	// and becomes the standby.
	RelayFailover Fault = "relay-failover"
	// RelayCrashAll kills both relays; they restart after the pause.
	RelayCrashAll Fault = "relay-crash-all"
	// SinkKill kills one of the two sinks; it restarts after the pause.
	SinkKill Fault = "sink-kill"
	// NATSRestart shuts the JetStream server down and starts it again (same
	// port, same store) after the pause.
	NATSRestart Fault = "nats-restart"
	// PostgresRestart crashes Postgres (pg_ctl stop -m immediate: no
	// shutdown checkpoint, crash recovery at start) and starts it after the
	// pause.
	PostgresRestart Fault = "postgres-restart"
	// HandlerError is not scheduled: writers mark events whose handler fails
	// (once, or always). It is listed for the report.
	HandlerError Fault = "handler-error"
)

// Scheduled lists the faults the scheduler injects, with their weights.
var Scheduled = []struct {
	Fault  Fault
	Weight int
}{
	{RelayFailover, 3},
	{RelayCrashAll, 1},
	{SinkKill, 3},
	{NATSRestart, 2},
	{PostgresRestart, 2},
}

// Step is one scheduled fault: wait Quiet, inject Fault, keep the component
// down for Pause, bring it back. Pick chooses among equivalent targets (which
// of the two sinks).
type Step struct {
	Quiet time.Duration
	Fault Fault
	Pause time.Duration
	Pick  int
}

// Scheduler produces a seeded sequence of steps. The first len(Scheduled)
// steps are every fault kind once, in a seeded order, so that even a short
// run injects each; later steps draw kinds by weight.
type Scheduler struct {
	p     Profile
	rng   *rand.Rand
	first []Fault
	n     int
}

// NewScheduler returns the scheduler for seed and p.
func NewScheduler(seed uint64, p Profile) *Scheduler {
	s := &Scheduler{p: p, rng: rand.New(rand.NewPCG(seed, 0x6368616f73))} // "chaos"
	for _, f := range scheduled(p) {
		s.first = append(s.first, f.Fault)
	}
	s.rng.Shuffle(len(s.first), func(i, j int) { s.first[i], s.first[j] = s.first[j], s.first[i] })
	return s
}

// Next returns the next step.
func (s *Scheduler) Next() Step {
	st := Step{
		Quiet: between(s.rng, s.p.QuietMin, s.p.QuietMax),
		Pause: between(s.rng, s.p.PauseMin, s.p.PauseMax),
		Pick:  s.rng.IntN(1 << 16),
	}
	if s.n < len(s.first) {
		st.Fault = s.first[s.n]
	} else {
		total := 0
		for _, f := range scheduled(s.p) {
			total += f.Weight
		}
		r := s.rng.IntN(total)
		for _, f := range scheduled(s.p) {
			if r < f.Weight {
				st.Fault = f.Fault
				break
			}
			r -= f.Weight
		}
	}
	s.n++
	return st
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}
