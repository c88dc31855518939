package testutil

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Result is what a finished command printed and its exit status.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// RunCommand runs path with args in an environment of only env ("KEY=value")
// plus PATH and HOME, so variables of the test's own environment (a
// DATABASE_URL, say) cannot change the outcome. It fails the test if the
// command does not exit within timeout.
func RunCommand(tb testing.TB, timeout time.Duration, path string, env []string, args ...string) Result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + tb.TempDir()}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		tb.Fatalf("%s %s: still running after %s\n%s%s", filepath.Base(path), strings.Join(args, " "), timeout, r.Stdout, r.Stderr)
	case errors.As(err, &exitErr):
		r.Code = exitErr.ExitCode()
	case err != nil:
		tb.Fatalf("run %s: %v", path, err)
	}
	return r
}

// CLICase is one command line of a binary and what it must answer.
type CLICase struct {
	Args   []string
	Env    []string // the whole environment besides PATH and HOME
	Code   int      // exit status
	Stdout []string // substrings stdout must contain
	Stderr []string // substrings stderr must contain
	// OneLine: stderr is exactly one line (a usage error names the mistake
	// and the choices without the whole help).
	OneLine bool
	// Match: stdout matches this regular expression.
	Match string
}

// CheckCLI runs every case against the binary at path (each at most 30s)
// and checks the exit status and the output. It returns the results by the
// command line joined with spaces.
func CheckCLI(t *testing.T, path string, cases []CLICase) map[string]Result {
	t.Helper()
	results := map[string]Result{}
	for _, c := range cases {
		name := strings.Join(append(append([]string{}, c.Env...), c.Args...), " ")
		if name == "" {
			name = "no arguments"
		}
		r := RunCommand(t, 30*time.Second, path, c.Env, c.Args...)
		results[strings.Join(c.Args, " ")] = r
		t.Run(name, func(t *testing.T) {
			if got, want := r.Code, c.Code; got != want {
				t.Fatalf("exit status=%d, want %d\nstdout:\n%s\nstderr:\n%s", got, want, r.Stdout, r.Stderr)
			}
			for _, s := range c.Stdout {
				if !strings.Contains(r.Stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, r.Stdout)
				}
			}
			for _, s := range c.Stderr {
				if !strings.Contains(r.Stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.Stderr)
				}
			}
			if c.OneLine && (strings.Count(r.Stderr, "\n") != 1 || r.Stdout != "") {
				t.Errorf("want one line on stderr and nothing on stdout; stdout:\n%s\nstderr:\n%s", r.Stdout, r.Stderr)
			}
			if c.Match != "" && !regexp.MustCompile(c.Match).MatchString(r.Stdout) {
				t.Errorf("stdout does not match %s:\n%s", c.Match, r.Stdout)
			}
		})
	}
	return results
}
