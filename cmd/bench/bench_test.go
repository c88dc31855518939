package main_test

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestBench_Quick runs the CI smoke: every step at tiny sizes against a local
// Postgres and JetStream, relay and sink as separate processes.
// It checks that the run succeeds, that the table and the JSON cover every
// step and every target, and that nothing is left behind.
func TestBench_Quick(t *testing.T) {
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	out := testutil.RunWithRelayAndSink(t, "bench", 150*time.Second, "--quick", "--json", jsonPath)

	for step := 1; step <= 8; step++ {
		if !regexp.MustCompile(`(?m)^` + string(rune('0'+step)) + `\s{2,}\S.*\d`).MatchString(out) {
			t.Errorf("table has no row for step %d:\n%s", step, out)
		}
	}
	for _, want := range []string{"TARGETS", "relay drain ≥ 0.7", "relay peak RSS < 150 MB", "keeps up with the fastest writers",
		"p99 commit→ack ≤ 25 ms", "sink ≥ 0.7", "SQL sink (upsert handler) ≥ 0.85", "webhook sink ≥ 0.70",
		"relay peak RSS ≤ 100 MB draining one", "sink peak RSS ≤ 300 MB", "message-mode writers ≥ 1.5", "drain in message mode", "end-to-end p99", "polling baseline", "relay vs tuned polling",
		"classic (sync publish per row, as the gem)", "tuned (async publish window)", "info (not a target)", "load average:",
		"on these shared cores", "ceiling: a bare transactional message", "commit→in stream (relay) p99", "in stream→applied (sink) p99", "µs; sink peak RSS"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "kept /") {
		t.Errorf("temporary directory kept after a successful run:\n%s", out)
	}

	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Steps   []int `json:"steps"`
		Results []struct {
			Step   int      `json:"step"`
			ID     string   `json:"id"`
			Values []any    `json:"values"`
			Ratio  *float64 `json:"ratio"`
		} `json:"results"`
		Targets []struct {
			Name     string `json:"name"`
			Met      *bool  `json:"met"`
			Info     bool   `json:"info"`
			Measured bool   `json:"measured"`
		} `json:"targets"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, raw)
	}
	steps, ids := map[int]int{}, map[string]bool{}
	for _, r := range rep.Results {
		steps[r.Step]++
		ids[r.ID] = true
		if len(r.Values) != 1 {
			t.Errorf("%s: %d values, want 1 (--quick is one repetition)", r.ID, len(r.Values))
		}
	}
	for step := 1; step <= 8; step++ {
		if steps[step] == 0 {
			t.Errorf("json has no result of step %d", step)
		}
	}
	// --quick runs both polling variants with one poller; every sink
	// measurement has its limit.
	for _, id := range []string{"sink_upsert_c16_rate", "direct_upsert_c16_rate", "direct_http_c16_rate",
		"http_bare_c16_rate", "inbox_rows_c16_rate", "mem_relay_rss", "mem_sink_rss", "poll_classic_p1_drain_rate", "poll_classic_p1_1000_p99",
		"poll_tuned_p1_drain_rate", "poll_tuned_p1_1000_p99", "msg_writer_message_rate", "msg_writer_table_rate",
		"msg_writer_bare_message_rate", "msg_writer_bare_table_rate"} {
		if !ids[id] {
			t.Errorf("json has no result %s", id)
		}
	}
	targets, infos := 0, 0
	for _, tg := range rep.Targets {
		switch {
		case !tg.Info:
			targets++
		case tg.Met != nil || !tg.Measured:
			t.Errorf("info line %q: met=%v measured=%v, want met null and measured", tg.Name, tg.Met, tg.Measured)
		default:
			infos++
		}
	}
	if targets != 13 || infos != 3 {
		t.Errorf("json has %d targets and %d info lines, want 13 and 3", targets, infos)
	}
}

// TestBench_Usage checks --help and that bad flags fail before anything starts.
func TestBench_Usage(t *testing.T) {
	bin := testutil.BuildBinary(t, "bench")
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{args: []string{"--help"}, wantCode: 0, want: "--sink-events N"},
		{args: []string{"--help"}, wantCode: 0, want: "--poll-modes LIST"},
		{args: []string{"--only", "10"}, wantCode: 2, want: "step 10 does not exist"},
		{args: []string{"--rates", "fast"}, wantCode: 2, want: "positive whole numbers or max"},
		{args: []string{"--reps", "0"}, wantCode: 2, want: "--reps 0"},
		{args: []string{"--relay-env", "GOGC"}, wantCode: 2, want: "KEY=VALUE"},
		{args: []string{"--poll-modes", "gem"}, wantCode: 2, want: "expected classic and/or tuned"},
		{args: []string{"--poll-modes", "tuned,tuned"}, wantCode: 2, want: "tuned given twice"},
		{args: []string{"extra"}, wantCode: 2, want: `unexpected argument "extra"`},
		{args: []string{"--postgres-cpus", "one"}, wantCode: 2, want: "expected CPU numbers"},
		{args: []string{"--postgres-cpus", "4096"}, wantCode: 2, want: "expected CPU numbers"},
		{args: []string{"--help"}, wantCode: 0, want: "--postgres-cpus LIST"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := exec.Command(bin, tt.args...).CombinedOutput()
			code := 0
			var exitErr *exec.ExitError
			if errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode {
				t.Fatalf("exit code=%d, want %d\n%s", code, tt.wantCode, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Fatalf("output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}
