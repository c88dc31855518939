package chaos

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Handler failure modes writers put in an event's payload ("fail").
const (
	FailOnce   = "once"   // fails until the sink has recorded a failed attempt
	FailAlways = "always" // refused for good: dead-lettered (or stale)
)

// Event is one committed outbox event, as read back from the source outbox.
type Event struct {
	ID   string
	Key  string // resource_type/resource_id
	Seq  int64  // per-key sequence: within a key, commit order
	Fail string // "", FailOnce or FailAlways
}

// Applied is one row of the handler's applied table. Order is the row's
// serial id: within a key, the sink's positions lock serialises handlers, so
// serial order is apply (commit) order.
type Applied struct {
	Order   int64
	EventID string
	Key     string
	Seq     int64
}

// InboxRow is what the sink's inbox says about an event.
type InboxRow struct {
	EventID    string
	Status     string // processed | stale | dead | failed | received | processing
	Deliveries int
	Failed     bool // a failed attempt was recorded (error_message set)
}

// Input is everything the end-state checks look at.
type Input struct {
	Committed  []Event
	RolledBack []string // ids of events in transactions the writers rolled back
	Applied    []Applied
	Inbox      []InboxRow
	Stream     []string // event ids on the publish subject, in stream order
	DLQ        []string // event ids of the sink's dead letters, in stream order
	// NoStale makes a stale event a failure: with partitions and
	// SKIP_STALE=false every event of a key is applied, in commit order.
	NoStale bool
}

// Report is the outcome of a run. The fields documented "must be 0" are the
// pass criteria (see Failures).
type Report struct {
	Committed  int // committed events (ground truth: the source outbox)
	RolledBack int // events in transactions rolled back on purpose

	Applied     int // distinct committed events applied
	AppliedRows int // rows in applied

	// Lost: committed events with no effect and no accepted reason: not
	// applied, not stale with a newer event of the key applied, and not (for
	// events the handler refuses for good) dead-lettered. Must be 0.
	Lost    int
	LostIDs []string // the first few, for diagnosis

	AppliedTwice       int      // events with more than one applied row; must be 0
	OrderViolations    int      // applied rows whose key had a later event applied before them; must be 0
	OrderViolationKeys []string // the keys of the first few, for diagnosis

	Stale             int // committed events recorded stale (SKIP_STALE); must be 0 with NoStale
	StaleForbidden    bool
	StaleUnjustified  int // stale, yet no later event of the key was applied; counted in Lost too
	KeysNotConverged  int // keys whose newest applicable event is not applied; must be 0
	RolledBackSeen    int // rolled-back events found anywhere downstream; must be 0
	Phantoms          int // ids downstream that were never written; must be 0
	PermanentInjected int // committed events the handler refuses for good
	PermanentDead     int // of those, dead-lettered
	PermanentApplied  int // of those, applied (impossible); must be 0
	UnexpectedDead    int // dead events the handler did not refuse for good; must be 0
	DeadWithoutLetter int // inbox dead rows without a dead letter; must be 0

	DLQMessages   int // messages on the sink's DLQ subject
	DLQEvents     int // distinct events among them
	DLQUnexpected int // dead letters of events the handler did not refuse for good; must be 0

	FailOnceInjected int // committed events whose handler fails once
	HandlerFailures  int // inbox rows with a recorded failed attempt

	StreamMessages        int // messages on the publish subject
	StreamDuplicates      int // messages beyond the first of their event (the dedupe window is bounded)
	StreamMissing         int // committed events never published; counted in Lost too
	StreamOrderViolations int // first occurrences of a key's events out of commit order; must be 0

	MaxDeliveries int // most deliveries of one event to a sink
	Redelivered   int // events delivered more than once

	Faults     map[Fault]int
	Drain      time.Duration // from the end of the last fault to every event settled
	DrainTotal time.Duration // from writers stopping to every event settled
}

// Analyze computes the report from in.
func Analyze(in Input) Report {
	r := Report{Committed: len(in.Committed), RolledBack: len(in.RolledBack), AppliedRows: len(in.Applied),
		StreamMessages: len(in.Stream), DLQMessages: len(in.DLQ), StaleForbidden: in.NoStale}

	committed := make(map[string]*Event, len(in.Committed))
	newest := map[string]*Event{} // per key, the newest event the handler can apply
	for i := range in.Committed {
		e := &in.Committed[i]
		committed[e.ID] = e
		switch e.Fail {
		case FailOnce:
			r.FailOnceInjected++
		case FailAlways:
			r.PermanentInjected++
			continue
		}
		if n := newest[e.Key]; n == nil || e.Seq > n.Seq {
			newest[e.Key] = e
		}
	}
	rolledBack := make(map[string]bool, len(in.RolledBack))
	for _, id := range in.RolledBack {
		rolledBack[id] = true
	}
	seen := map[string]bool{} // downstream ids, for rolled-back and phantom counts
	downstream := func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		switch {
		case rolledBack[id]:
			r.RolledBackSeen++
		case committed[id] == nil:
			r.Phantoms++
		}
	}

	// Applied: duplicates, and order within each key.
	applied := map[string]int{}
	maxApplied := map[string]int64{} // per key, the highest seq applied
	rows := slices.Clone(in.Applied)
	sort.Slice(rows, func(i, j int) bool { return rows[i].Order < rows[j].Order })
	for _, a := range rows {
		downstream(a.EventID)
		if applied[a.EventID]++; applied[a.EventID] == 2 {
			r.AppliedTwice++
		}
		if m, ok := maxApplied[a.Key]; ok && a.Seq < m {
			r.OrderViolations++
			if len(r.OrderViolationKeys) < 10 {
				r.OrderViolationKeys = append(r.OrderViolationKeys, a.Key)
			}
		}
		maxApplied[a.Key] = max(maxApplied[a.Key], a.Seq)
	}

	inbox := make(map[string]InboxRow, len(in.Inbox))
	for _, row := range in.Inbox {
		downstream(row.EventID)
		inbox[row.EventID] = row
		r.MaxDeliveries = max(r.MaxDeliveries, row.Deliveries)
		if row.Deliveries > 1 {
			r.Redelivered++
		}
		if row.Failed && row.Status != "dead" {
			r.HandlerFailures++
		}
	}

	dlq := map[string]bool{}
	for _, id := range in.DLQ {
		downstream(id)
		if !dlq[id] {
			dlq[id] = true
			if e := committed[id]; e == nil || e.Fail != FailAlways {
				r.DLQUnexpected++
			}
		}
	}
	r.DLQEvents = len(dlq)

	// Stream: duplicates, and the order of each key's first occurrences.
	inStream := map[string]bool{}
	streamMax := map[string]int64{}
	for _, id := range in.Stream {
		downstream(id)
		if inStream[id] {
			r.StreamDuplicates++
			continue
		}
		inStream[id] = true
		if e := committed[id]; e != nil {
			if m, ok := streamMax[e.Key]; ok && e.Seq < m {
				r.StreamOrderViolations++
			}
			streamMax[e.Key] = max(streamMax[e.Key], e.Seq)
		}
	}

	for _, e := range in.Committed {
		if !inStream[e.ID] {
			r.StreamMissing++
		}
		row, hasRow := inbox[e.ID]
		isApplied := applied[e.ID] > 0
		ok := isApplied
		switch {
		case isApplied:
			r.Applied++
			if e.Fail == FailAlways {
				r.PermanentApplied++
			}
		case hasRow && row.Status == "stale":
			r.Stale++
			// Stale is a decision that a later event of the key was applied
			// first; without one, the event was dropped.
			if maxApplied[e.Key] > e.Seq {
				ok = true
			} else {
				r.StaleUnjustified++
			}
		case hasRow && row.Status == "dead" && e.Fail == FailAlways:
			r.PermanentDead++
			ok = dlq[e.ID]
		}
		if hasRow && row.Status == "dead" {
			if e.Fail != FailAlways {
				r.UnexpectedDead++
			}
			if !dlq[e.ID] {
				r.DeadWithoutLetter++
			}
		}
		if !ok {
			r.Lost++
			if len(r.LostIDs) < 20 {
				r.LostIDs = append(r.LostIDs, e.ID)
			}
		}
	}
	for _, e := range newest {
		if applied[e.ID] == 0 {
			r.KeysNotConverged++
		}
	}
	return r
}

// Failures lists the must-be-0 figures that are not 0.
func (r *Report) Failures() []string {
	var f []string
	for _, c := range r.checks() {
		if c.mustBeZero && c.value != 0 {
			f = append(f, fmt.Sprintf("%s = %d, must be 0", c.name, c.value))
		}
	}
	return f
}

type figure struct {
	name       string
	value      int
	mustBeZero bool
	note       string
}

func (r *Report) checks() []figure {
	return []figure{
		{"events committed", r.Committed, false, "ground truth: the source outbox"},
		{"events rolled back", r.RolledBack, false, "written in transactions rolled back on purpose"},
		{"events applied", r.Applied, false, "distinct committed events with an applied row"},
		{"lost", r.Lost, true, "not applied, not justified stale, not dead-lettered as injected"},
		{"applied twice", r.AppliedTwice, true, "events with more than one applied row"},
		{"per-key order violations", r.OrderViolations, true, "applied after a later event of its key"},
		{"stale (skipped)", r.Stale, r.StaleForbidden, "older than the key's newest applied event (SKIP_STALE; must be 0 partitioned)"},
		{"stale without a later applied", r.StaleUnjustified, true, "counted in lost too"},
		{"keys not converged", r.KeysNotConverged, true, "newest applicable event of the key not applied"},
		{"rolled-back events seen", r.RolledBackSeen, true, "in the stream, inbox, applied or DLQ"},
		{"phantom events", r.Phantoms, true, "downstream ids that were never written"},
		{"handler errors injected (fail once)", r.FailOnceInjected, false, "committed events failing their first attempt"},
		{"handler failures recorded", r.HandlerFailures, false, "inbox rows with a failed attempt, then applied or stale"},
		{"permanent errors injected", r.PermanentInjected, false, "committed events the handler refuses for good"},
		{"permanent: dead-lettered", r.PermanentDead, false, "the rest were stale before the handler ran"},
		{"permanent: applied", r.PermanentApplied, true, ""},
		{"DLQ messages", r.DLQMessages, false, ""},
		{"DLQ events", r.DLQEvents, false, "distinct events dead-lettered"},
		{"DLQ unexpected", r.DLQUnexpected, true, "dead letters of events the handler accepts"},
		{"dead, not injected", r.UnexpectedDead, true, "inbox rows dead though the handler accepts them"},
		{"dead without a dead letter", r.DeadWithoutLetter, true, ""},
		{"stream messages", r.StreamMessages, false, "on the publish subject"},
		{"stream duplicates", r.StreamDuplicates, false, "stored again after the dedupe window; the inbox absorbs them"},
		{"not in the stream", r.StreamMissing, true, "committed, never published (counted in lost too)"},
		{"stream order violations", r.StreamOrderViolations, true, "a key's events first stored out of commit order"},
		{"events redelivered", r.Redelivered, false, "delivered to a sink more than once"},
		{"max deliveries of one event", r.MaxDeliveries, false, ""},
	}
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tmust be 0\tnote")
	fmt.Fprintln(tw, "------\t-----\t---------\t----")
	for _, c := range r.checks() {
		must := ""
		if c.mustBeZero {
			must = "yes"
			if c.value != 0 {
				must = "FAIL"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", c.name, c.value, must, c.note)
	}
	var kinds []string
	for f := range r.Faults {
		kinds = append(kinds, string(f))
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(tw, "faults: %s\t%d\t\t\n", k, r.Faults[Fault(k)])
	}
	fmt.Fprintf(tw, "drain after the last fault\t%s\t\t\n", r.Drain.Round(100*time.Millisecond))
	fmt.Fprintf(tw, "drain after writers stopped\t%s\t\t\n", r.DrainTotal.Round(100*time.Millisecond))
	tw.Flush()
	if len(r.LostIDs) > 0 {
		fmt.Fprintf(w, "lost (first %d): %s\n", len(r.LostIDs), strings.Join(r.LostIDs, " "))
	}
}
