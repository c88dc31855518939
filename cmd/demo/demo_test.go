package main_test

import (
	"errors"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestDemo_BoundedRunConverges runs the whole demo as a user would in CI:
// local Postgres, embedded JetStream, two relays, two sinks, five seconds of
// writes on both sides, then verification.
func TestDemo_BoundedRunConverges(t *testing.T) {
	out := testutil.RunWithRelayAndSink(t, "demo", 90*time.Second, "--duration", "5s", "--rate", "40")

	m := regexp.MustCompile(`(?m)^result: converged=(\w+) a_to_b=(\d+) b_to_a=(\d+) loops=(\d+) dead=(\d+) differing_rows=(\d+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no result line in output:\n%s", out)
	}
	num := func(i int) int {
		n, _ := strconv.Atoi(m[i])
		return n
	}
	if got, want := m[1], "true"; got != want {
		t.Fatalf("converged=%v, want %v\n%s", got, want, out)
	}
	if num(2) == 0 || num(3) == 0 {
		t.Fatalf("a_to_b=%d b_to_a=%d, want both > 0\n%s", num(2), num(3), out)
	}
	for i, name := range map[int]string{4: "loops", 5: "dead", 6: "differing_rows"} {
		if got := num(i); got != 0 {
			t.Fatalf("%s=%d, want 0\n%s", name, got, out)
		}
	}
	for _, want := range []string{"CONVERGED", "identical", "stopping relays and sinks (SIGTERM) ... done"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "kept /") {
		t.Errorf("temporary directory kept after a successful run:\n%s", out)
	}
}

// TestDemo_Usage checks --help and that bad flags fail before anything starts.
func TestDemo_Usage(t *testing.T) {
	bin := testutil.BuildBinary(t, "demo")
	tests := []struct {
		args     []string
		env      []string
		wantCode int
		want     string
	}{
		{args: []string{"--help"}, wantCode: 0, want: "--duration D"},
		{args: []string{"--db-a", "postgres://x/a"}, wantCode: 2, want: "go together"},
		{args: []string{"--db-a", "postgres://x/a", "--db-b", "postgres://x/a"}, wantCode: 2, want: "same database"},
		{args: []string{"--rate", "0"}, wantCode: 2, want: "--rate 0"},
		{env: []string{"DEMO_DURATION=soon"}, wantCode: 2, want: "DEMO_DURATION"},
		{args: []string{"extra"}, wantCode: 2, want: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append(tt.env, tt.args...), " "), func(t *testing.T) {
			cmd := exec.Command(bin, tt.args...)
			cmd.Env = append(cmd.Environ(), tt.env...)
			out, err := cmd.CombinedOutput()
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
