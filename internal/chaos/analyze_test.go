package chaos_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/chaos"
)

// world3 is two keys: a has events a1..a3, b has b1..b2, committed in that
// per-key order; r1 was rolled back.
func world3() chaos.Input {
	return chaos.Input{
		Committed: []chaos.Event{
			{ID: "a1", Key: "k/a", Seq: 1}, {ID: "b1", Key: "k/b", Seq: 1}, {ID: "a2", Key: "k/a", Seq: 2},
			{ID: "a3", Key: "k/a", Seq: 3}, {ID: "b2", Key: "k/b", Seq: 2},
		},
		RolledBack: []string{"r1"},
		Stream:     []string{"a1", "b1", "a2", "a3", "b2"},
	}
}

func applyAll(in *chaos.Input, ids ...string) {
	seq := map[string]chaos.Event{}
	for _, e := range in.Committed {
		seq[e.ID] = e
	}
	for i, id := range ids {
		e := seq[id]
		in.Applied = append(in.Applied, chaos.Applied{Order: int64(i + 1), EventID: id, Key: e.Key, Seq: e.Seq})
		in.Inbox = append(in.Inbox, chaos.InboxRow{EventID: id, Status: "processed", Deliveries: 1})
	}
}

func TestAnalyze(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func() chaos.Input
		want  func(r chaos.Report) string // "" when the report is as expected
	}{
		{"clean", func() chaos.Input {
			in := world3()
			applyAll(&in, "a1", "b1", "a2", "b2", "a3")
			return in
		}, func(r chaos.Report) string {
			if len(r.Failures()) != 0 || r.Applied != 5 || r.Lost != 0 {
				return "expected a clean report"
			}
			return ""
		}},
		{"lost and not converged", func() chaos.Input {
			in := world3()
			applyAll(&in, "a1", "b1", "a2", "b2")
			return in
		}, func(r chaos.Report) string {
			if r.Lost != 1 || r.LostIDs[0] != "a3" || r.KeysNotConverged != 1 {
				return "expected a3 lost and key a not converged"
			}
			return ""
		}},
		{"applied twice", func() chaos.Input {
			in := world3()
			applyAll(&in, "a1", "b1", "a2", "b2", "a3")
			in.Applied = append(in.Applied, chaos.Applied{Order: 99, EventID: "b2", Key: "k/b", Seq: 2})
			return in
		}, func(r chaos.Report) string {
			if r.AppliedTwice != 1 || r.OrderViolations != 0 || r.Applied != 5 {
				return "expected one double apply, no order violation"
			}
			return ""
		}},
		{"order violation", func() chaos.Input {
			in := world3()
			applyAll(&in, "a2", "a1", "b1", "b2", "a3")
			return in
		}, func(r chaos.Report) string {
			if r.OrderViolations != 1 {
				return "expected a1 after a2 to be one violation"
			}
			return ""
		}},
		{"justified stale", func() chaos.Input {
			in := world3()
			applyAll(&in, "a2", "b1", "b2", "a3")
			in.Inbox = append(in.Inbox, chaos.InboxRow{EventID: "a1", Status: "stale", Deliveries: 2})
			return in
		}, func(r chaos.Report) string {
			if r.Stale != 1 || r.Lost != 0 || r.StaleUnjustified != 0 || r.Redelivered != 1 || r.MaxDeliveries != 2 {
				return "expected a1 stale, justified by a2"
			}
			return ""
		}},
		{"stale when partitioned", func() chaos.Input {
			in := world3()
			applyAll(&in, "a2", "b1", "b2", "a3")
			in.Inbox = append(in.Inbox, chaos.InboxRow{EventID: "a1", Status: "stale"})
			in.NoStale = true
			return in
		}, func(r chaos.Report) string {
			if f := r.Failures(); r.Stale != 1 || r.Lost != 0 || len(f) != 1 || !strings.Contains(f[0], "stale") {
				return fmt.Sprintf("expected a justified stale to be the one failure, got %v", f)
			}
			return ""
		}},
		{"unjustified stale", func() chaos.Input {
			in := world3()
			applyAll(&in, "a1", "a2", "b1", "b2")
			in.Inbox = append(in.Inbox, chaos.InboxRow{EventID: "a3", Status: "stale"})
			return in
		}, func(r chaos.Report) string {
			if r.Stale != 1 || r.StaleUnjustified != 1 || r.Lost != 1 || r.KeysNotConverged != 1 {
				return "expected a3 stale without a later applied event: lost"
			}
			return ""
		}},
		{"rolled back and phantom", func() chaos.Input {
			in := world3()
			applyAll(&in, "a1", "b1", "a2", "b2", "a3")
			in.Stream = append(in.Stream, "r1")
			in.Inbox = append(in.Inbox, chaos.InboxRow{EventID: "r1", Status: "processed"}, chaos.InboxRow{EventID: "zz", Status: "processed"})
			return in
		}, func(r chaos.Report) string {
			if r.RolledBackSeen != 1 || r.Phantoms != 1 {
				return "expected r1 counted once as rolled back seen and zz as a phantom"
			}
			return ""
		}},
		{"permanent failures", func() chaos.Input {
			in := world3()
			in.Committed = append(in.Committed, chaos.Event{ID: "a4", Key: "k/a", Seq: 4, Fail: chaos.FailAlways},
				chaos.Event{ID: "b3", Key: "k/b", Seq: 3, Fail: chaos.FailAlways})
			in.Stream = append(in.Stream, "a4", "b3")
			applyAll(&in, "a1", "b1", "a2", "b2", "a3")
			in.Inbox = append(in.Inbox, chaos.InboxRow{EventID: "a4", Status: "dead", Failed: true},
				chaos.InboxRow{EventID: "b3", Status: "dead", Failed: true})
			in.DLQ = []string{"a4", "a4"} // b3's dead letter is missing
			return in
		}, func(r chaos.Report) string {
			if r.PermanentInjected != 2 || r.PermanentDead != 2 || r.DeadWithoutLetter != 1 || r.Lost != 1 ||
				r.DLQMessages != 2 || r.DLQEvents != 1 || r.DLQUnexpected != 0 || r.KeysNotConverged != 0 || r.HandlerFailures != 0 {
				return "expected b3 lost for want of a dead letter, a4 accounted for"
			}
			return ""
		}},
		{"unexpected dead letter", func() chaos.Input {
			in := world3()
			applyAll(&in, "a1", "b1", "a2", "b2")
			in.Inbox = append(in.Inbox, chaos.InboxRow{EventID: "a3", Status: "dead", Failed: true})
			in.DLQ = []string{"a3"}
			return in
		}, func(r chaos.Report) string {
			if r.UnexpectedDead != 1 || r.DLQUnexpected != 1 || r.Lost != 1 {
				return "expected a3's dead letter to be unexpected and a3 lost"
			}
			return ""
		}},
		{"stream duplicates and order", func() chaos.Input {
			in := world3()
			in.Stream = []string{"a1", "a3", "a2", "b1", "b2", "a1"}
			applyAll(&in, "a1", "b1", "a2", "b2", "a3")
			return in
		}, func(r chaos.Report) string {
			if r.StreamDuplicates != 1 || r.StreamOrderViolations != 1 || r.StreamMissing != 0 || r.StreamMessages != 6 {
				return "expected one duplicate and one stream order violation"
			}
			return ""
		}},
		{"missing from the stream", func() chaos.Input {
			in := world3()
			in.Stream = []string{"a1", "a2", "a3", "b1"}
			applyAll(&in, "a1", "b1", "a2", "a3")
			return in
		}, func(r chaos.Report) string {
			if r.StreamMissing != 1 || r.Lost != 1 {
				return "expected b2 missing from the stream and lost"
			}
			return ""
		}},
		{"handler failures", func() chaos.Input {
			in := world3()
			in.Committed[0].Fail = chaos.FailOnce
			applyAll(&in, "a1", "b1", "a2", "b2", "a3")
			in.Inbox[0].Failed = true
			return in
		}, func(r chaos.Report) string {
			if r.FailOnceInjected != 1 || r.HandlerFailures != 1 || len(r.Failures()) != 0 {
				return "expected one injected and recorded handler failure, nothing failing"
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := chaos.Analyze(tc.build())
			if msg := tc.want(r); msg != "" {
				var b bytes.Buffer
				r.Print(&b)
				t.Fatalf("%s; report:\n%s", msg, b.String())
			}
		})
	}
}

func TestReportPrint(t *testing.T) {
	in := world3()
	applyAll(&in, "a1", "b1", "a2", "b2")
	r := chaos.Analyze(in)
	r.Faults = map[chaos.Fault]int{chaos.SinkKill: 3}
	r.Drain = 1500 * time.Millisecond
	var b bytes.Buffer
	r.Print(&b)
	for _, want := range []string{"lost  ", "FAIL", "faults: sink-kill", "1.5s", "lost (first 1): a3"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	if got := r.Failures(); len(got) != 2 || !strings.Contains(got[0], "lost = 1") {
		t.Errorf("failures = %q, want lost and keys not converged", got)
	}
}

func TestScheduler(t *testing.T) {
	p := chaos.Short()
	a, b := chaos.NewScheduler(42, p), chaos.NewScheduler(42, p)
	first := map[chaos.Fault]bool{}
	for i := 0; i < 200; i++ {
		sa, sb := a.Next(), b.Next()
		if sa != sb {
			t.Fatalf("step %d differs for one seed: %+v vs %+v", i, sa, sb)
		}
		if i < len(chaos.Scheduled) {
			first[sa.Fault] = true
		}
		if sa.Quiet < p.QuietMin || sa.Quiet > p.QuietMax || sa.Pause < p.PauseMin || sa.Pause > p.PauseMax {
			t.Fatalf("step %d out of the profile's bounds: %+v", i, sa)
		}
	}
	if got, want := len(first), len(chaos.Scheduled); got != want {
		t.Fatalf("first %d steps cover %d fault kinds, want every kind", want, got)
	}
	c := chaos.NewScheduler(43, p)
	same := true
	for i := 0; i < 20; i++ {
		if a.Next() != c.Next() {
			same = false
		}
	}
	if same {
		t.Fatal("seeds 42 and 43 give the same schedule")
	}
}

func TestProfileFor(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	p, err := chaos.ProfileFor("", getenv)
	if err != nil || p.Name != "short" {
		t.Fatalf("default profile: %v %+v", err, p)
	}
	env["CHAOS_DURATION"], env["CHAOS_RATE"] = "3m", "120"
	p, err = chaos.ProfileFor("LONG", getenv)
	if err != nil || p.Name != "long" || p.Duration != 3*time.Minute || p.Rate != 120 {
		t.Fatalf("long with overrides: %v %+v", err, p)
	}
	if p.Partitions != 8 {
		t.Errorf("long profile: %d partitions, want 8", p.Partitions)
	}
	env["CHAOS_PARTITIONS"] = "0"
	if p, err = chaos.ProfileFor("long", getenv); err != nil || p.Partitions != 0 {
		t.Errorf("long with CHAOS_PARTITIONS=0: %v, %d partitions", err, p.Partitions)
	}
	delete(env, "CHAOS_PARTITIONS")
	if p, err = chaos.ProfileFor("short", getenv); err != nil || p.Partitions != 0 {
		t.Errorf("short: %v, %d partitions, want unpartitioned", err, p.Partitions)
	}
	env["CHAOS_PARTITIONS"] = "4"
	if p, err = chaos.ProfileFor("short", getenv); err != nil || p.Partitions != 4 {
		t.Errorf("short with CHAOS_PARTITIONS=4: %v, %d partitions", err, p.Partitions)
	}
	for k, v := range map[string]string{"CHAOS_DURATION": "1s", "CHAOS_RATE": "fast", "CHAOS_KEYS": "0", "CHAOS_PARTITIONS": "-1"} {
		env := map[string]string{k: v}
		if _, err := chaos.ProfileFor("short", func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: err %v, want one naming the variable", k, v, err)
		}
	}
	if _, err := chaos.ProfileFor("medium", getenv); err == nil {
		t.Error("unknown profile accepted")
	}
}
