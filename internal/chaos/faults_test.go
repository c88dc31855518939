package chaos_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/chaos"
)

// TestProfileForFaults: CHAOS_FAULTS adds optional fault kinds, "none"
// removes them; the short profile (CI) has none, the long one Postgres
// failovers and 8 partitions.
func TestProfileForFaults(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	p, err := chaos.ProfileFor("short", getenv)
	if err != nil || len(p.Faults) != 0 || p.Enabled(chaos.PostgresFailover) || p.Partitions != 0 {
		t.Fatalf("short profile: %v, faults %v, partitions %d, want none", err, p.Faults, p.Partitions)
	}
	p, err = chaos.ProfileFor("long", getenv)
	if err != nil || !p.Enabled(chaos.PostgresFailover) || p.Partitions != 8 {
		t.Fatalf("long profile: %v, faults %v, partitions %d, want postgres-failover and 8", err, p.Faults, p.Partitions)
	}
	env["CHAOS_FAULTS"], env["CHAOS_PARTITIONS"] = "none", "0"
	p, err = chaos.ProfileFor("long", getenv)
	if err != nil || len(p.Faults) != 0 || p.Partitions != 0 {
		t.Fatalf("long profile with CHAOS_FAULTS=none CHAOS_PARTITIONS=0: %v, faults %v, partitions %d", err, p.Faults, p.Partitions)
	}
	delete(env, "CHAOS_PARTITIONS")
	env["CHAOS_FAULTS"] = " postgres-failover, ,postgres-failover"
	for _, name := range []string{"short", "long"} {
		p, err = chaos.ProfileFor(name, getenv)
		if err != nil || !slices.Equal(p.Faults, []chaos.Fault{chaos.PostgresFailover}) {
			t.Fatalf("%s with CHAOS_FAULTS=%q: %v, faults %v", name, env["CHAOS_FAULTS"], err, p.Faults)
		}
	}
	env["CHAOS_FAULTS"] = "postgres-failover,disk-full"
	if _, err := chaos.ProfileFor("short", getenv); err == nil || !strings.Contains(err.Error(), "CHAOS_FAULTS") || !strings.Contains(err.Error(), "disk-full") {
		t.Fatalf("unknown fault: err %v, want one naming CHAOS_FAULTS and the fault", err)
	}
}

// TestSchedulerOptionalFaults: an enabled optional fault is among the first
// steps (every kind once) and drawn later too; without it the schedule is
// the default one, step for step.
func TestSchedulerOptionalFaults(t *testing.T) {
	p := chaos.Short()
	withFailover := p
	withFailover.Faults = []chaos.Fault{chaos.PostgresFailover}
	plain, again := chaos.NewScheduler(7, p), chaos.NewScheduler(7, chaos.Short())
	s := chaos.NewScheduler(7, withFailover)
	first, later := 0, 0
	n := len(chaos.Scheduled) + 1
	for i := 0; i < 400; i++ {
		if a, b := plain.Next(), again.Next(); a != b || a.Fault == chaos.PostgresFailover {
			t.Fatalf("step %d of the default schedule: %+v vs %+v", i, a, b)
		}
		if st := s.Next(); st.Fault == chaos.PostgresFailover {
			if i < n {
				first++
			} else {
				later++
			}
		}
	}
	if first != 1 || later == 0 {
		t.Fatalf("%s: %d times in the first %d steps (want 1), %d times later (want some)", chaos.PostgresFailover, first, n, later)
	}
}
