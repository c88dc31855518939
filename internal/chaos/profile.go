package chaos

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Profile sizes a chaos run.
type Profile struct {
	Name string
	// Duration is how long writers write and faults are injected.
	Duration time.Duration
	// Rate is the events per second writers aim for, rolled-back ones included.
	Rate int
	// Writers is the number of concurrent writer connections.
	Writers int
	// Keys is the number of (resource_type, resource_id) keys events spread over.
	Keys int
	// RollbackRate is the fraction of transactions rolled back on purpose.
	RollbackRate float64
	// FailOnceRate is the fraction of events whose handler fails on the first
	// attempt and succeeds once the sink has recorded that failure.
	FailOnceRate float64
	// PermanentRate is the fraction of events whose handler always refuses
	// them (SQLSTATE JBDLQ): they must end dead-lettered, or stale.
	PermanentRate float64
	// SlowRate is the fraction of events whose handler takes 50-300ms, so
	// that kills and crashes often find a handler mid-transaction.
	SlowRate float64
	// QuietMin and QuietMax bound the quiet time between two faults.
	QuietMin, QuietMax time.Duration
	// PauseMin and PauseMax bound how long a faulted component stays down.
	PauseMin, PauseMax time.Duration
	// Drain bounds the wait for every committed event once faults stop.
	Drain time.Duration
	// Partitions, when above 0, runs the relays and three sinks with
	// PARTITIONS set and SKIP_STALE=false: each key's events must then be
	// applied, all of them, in commit order, so a stale event is a failure.
	// 0 runs two sinks on one durable with SKIP_STALE=true.
	Partitions int
	// Faults are the optional fault kinds (see Optional) injected besides
	// Scheduled.
	Faults []Fault
}

// Short is the CI profile: about 3,000 events and a dozen faults, every
// fault kind at least once, in about two minutes on two busy cores.
func Short() Profile {
	return Profile{
		Name: "short", Duration: 60 * time.Second, Rate: 50, Writers: 4, Keys: 200,
		RollbackRate: 0.1, FailOnceRate: 0.03, PermanentRate: 0.002, SlowRate: 0.02,
		QuietMin: 2 * time.Second, QuietMax: 5 * time.Second,
		PauseMin: 200 * time.Millisecond, PauseMax: 2 * time.Second,
		Drain: 2 * time.Minute,
	}
}

// Long is the `make chaos` profile: tens of thousands of events over twelve
// minutes of faults, partitioned (8 partitions, three sinks, every event of
// a key in order) and with Postgres failovers besides the scheduled faults
// (CHAOS_PARTITIONS=0 and CHAOS_FAULTS=none take them out).
func Long() Profile {
	return Profile{
		Name: "long", Duration: 12 * time.Minute, Rate: 70, Writers: 6, Keys: 200,
		RollbackRate: 0.1, FailOnceRate: 0.03, PermanentRate: 0.002, SlowRate: 0.02,
		QuietMin: 2 * time.Second, QuietMax: 10 * time.Second,
		PauseMin: 200 * time.Millisecond, PauseMax: 5 * time.Second,
		Drain:      10 * time.Minute,
		Partitions: 8,
		Faults:     []Fault{PostgresFailover},
	}
}

// ProfileFor returns the named profile ("short" or "long"; "" is short) with
// the overrides in getenv applied: CHAOS_DURATION (a Go duration), CHAOS_RATE
// (events per second), CHAOS_KEYS, CHAOS_PARTITIONS (0 = unpartitioned) and
// CHAOS_FAULTS (optional fault kinds to inject besides the default ones,
// comma-separated, added to the profile's own; "none" removes the
// profile's own).
func ProfileFor(name string, getenv func(string) string) (Profile, error) {
	var p Profile
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "", "short":
		p = Short()
	case "long":
		p = Long()
	default:
		return Profile{}, fmt.Errorf("chaos profile %q: expected short, long or off", name)
	}
	if v := getenv("CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			return Profile{}, fmt.Errorf("CHAOS_DURATION=%q: expected a duration of at least 5s, e.g. 10m", v)
		}
		p.Duration = d
	}
	for _, o := range []struct {
		name string
		dst  *int
		min  int
	}{{"CHAOS_RATE", &p.Rate, 1}, {"CHAOS_KEYS", &p.Keys, 1}, {"CHAOS_PARTITIONS", &p.Partitions, 0}} {
		v := getenv(o.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < o.min {
			return Profile{}, fmt.Errorf("%s=%q: expected a whole number of at least %d", o.name, v, o.min)
		}
		*o.dst = n
	}
	if v := getenv("CHAOS_FAULTS"); strings.EqualFold(strings.TrimSpace(v), "none") {
		p.Faults = nil
	} else if v != "" {
		extra, err := parseFaults(v)
		if err != nil {
			return Profile{}, err
		}
		for _, f := range extra {
			if !p.Enabled(f) {
				p.Faults = append(p.Faults, f)
			}
		}
	}
	return p, nil
}
