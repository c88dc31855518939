package chaos

import (
	"fmt"
	"slices"
	"strings"
)

// PostgresFailover crashes the Postgres primary (pg_ctl stop -m immediate),
// promotes its synchronous streaming standby, and gives the new primary a
// new synchronous standby, so that another failover can follow. Every
// process and writer reaches Postgres through a multi-host URL listing both
// nodes. It is opt-in (Profile.Faults, CHAOS_FAULTS): the world needs the
// standby only when it is enabled.
const PostgresFailover Fault = "postgres-failover"

// Optional lists the faults a profile may enable beyond Scheduled, with
// their weights.
var Optional = []struct {
	Fault  Fault
	Weight int
}{
	{PostgresFailover, 1},
}

// Enabled reports whether the profile injects the optional fault f.
func (p Profile) Enabled(f Fault) bool { return slices.Contains(p.Faults, f) }

// parseFaults reads a comma-separated list of optional fault kinds.
func parseFaults(v string) ([]Fault, error) {
	var out []Fault
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		known := false
		for _, o := range Optional {
			if string(o.Fault) == name {
				known = true
			}
		}
		if !known {
			var names []string
			for _, o := range Optional {
				names = append(names, string(o.Fault))
			}
			return nil, fmt.Errorf("CHAOS_FAULTS: unknown fault %q, expected a comma-separated list of %s", name, strings.Join(names, ", "))
		}
		if !slices.Contains(out, Fault(name)) {
			out = append(out, Fault(name))
		}
	}
	return out, nil
}

// scheduled is the faults a run with p injects: Scheduled and the optional
// ones p enables.
func scheduled(p Profile) []struct {
	Fault  Fault
	Weight int
} {
	out := slices.Clone(Scheduled)
	for _, o := range Optional {
		if p.Enabled(o.Fault) {
			out = append(out, o)
		}
	}
	return out
}
