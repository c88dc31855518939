package main_test

import (
	"regexp"
	"runtime"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// versionLine is what `relay version` prints: the module version, the VCS
// revision (a full hash when built from a git clone, "unknown" otherwise) and
// the toolchain.
var versionLine = `^relay \S+, revision (unknown|[0-9a-f]{40}( \([^)]*\))?), ` + regexp.QuoteMeta(runtime.Version()) + ` \S+/\S+\n$`

// TestCLI_HelpVersionAndExitStatus drives the built relay through every
// command's --help, `help COMMAND`, version, and mistakes: help goes to
// stdout with status 0; an unknown command or flag, a bad variable or a
// missing argument is one line on stderr with status 2; a dependency that is
// down is status 1.
func TestCLI_HelpVersionAndExitStatus(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "relay")
	valid := []string{"DATABASE_URL=postgres://bridge@127.0.0.1:1/app", "APP_NAME=orders", "DESTINATION_APP=billing"}
	cases := []testutil.CLICase{
		{Args: []string{"--help"}, Stdout: []string{"relay status [--json]", "relay help [COMMAND]", "relay version",
			"Exit status: 0 success, 1 runtime failure, 2 usage or configuration error", "SLOT_LAG_WARN_BYTES", "1073741824",
			"SLOT_RECOVERY", "SLOT_RECOVERY_MARGIN"}},
		{Args: []string{"-h"}, Stdout: []string{"relay backfill --since"}},
		{Args: []string{"help"}, Stdout: []string{"relay provision"}},
		{Args: []string{"version"}, Match: versionLine},
		{Args: []string{"--version"}, Match: versionLine},
		{Args: []string{"version", "extra"}, Code: 2, OneLine: true, Stderr: []string{`"extra"`}},
		{Args: []string{"nosuch"}, Code: 2, OneLine: true,
			Stderr: []string{`relay: unknown command "nosuch"; valid commands: run, provision, status, backfill, audit, version, help`}},
		{Args: []string{"--nosuch"}, Code: 2, OneLine: true, Stderr: []string{"--nosuch", "--help, --version", "run, provision"}},
		{Args: []string{"help", "nosuch"}, Code: 2, OneLine: true, Stderr: []string{`unknown command "nosuch"`}},
		{Args: []string{"status", "--watch", "soon"}, Code: 2, OneLine: true, Stderr: []string{`invalid value "soon" for flag -watch`}},
		{Args: []string{"status", "extra"}, Code: 2, OneLine: true, Stderr: []string{`unexpected argument "extra"`}},
		{Args: []string{"backfill"}, Env: valid, Code: 2, OneLine: true, Stderr: []string{"--since"}},
		{Args: []string{"backfill", "--since", "yesterday"}, Env: valid, Code: 2, OneLine: true, Stderr: []string{"RFC 3339"}},
		{Args: []string{"audit"}, Env: valid, Code: 2, OneLine: true, Stderr: []string{"--since is required"}},
		{Args: []string{"audit", "--since", "yesterday"}, Env: valid, Code: 2, OneLine: true, Stderr: []string{"a duration ago such as 1h"}},
		{Args: []string{"audit", "--since", "1h", "--page", "0"}, Env: valid, Code: 2, OneLine: true, Stderr: []string{"--page 0"}},
		// Configuration errors: nothing is attempted, status 2.
		{Args: nil, Code: 2, Stderr: []string{"DATABASE_URL is required and not set"}},
		{Args: []string{"run"}, Env: append(valid, "SLOT_RECOVERY=sometimes"), Code: 2, Stderr: []string{`SLOT_RECOVERY="sometimes": expected auto or manual`}},
		{Args: []string{"run"}, Env: append(valid, "SLOT_RECOVERY_MARGIN=0s"), Code: 2, Stderr: []string{"SLOT_RECOVERY_MARGIN=0s: must be positive"}},
		{Args: []string{"provision"}, Env: append(valid, "MAX_INFLIGHT=lots"), Code: 2, Stderr: []string{`MAX_INFLIGHT="lots": expected a whole number`}},
		{Args: []string{"run"}, Env: []string{"DATABASE_URL=postgres://bridge:TOPSECRET@127.0.0.1:1/app?sslmode=sometimes",
			"APP_NAME=orders", "DESTINATION_APP=billing"}, Code: 2, Stderr: []string{"DATABASE_URL:", "sslmode is invalid"}},
	}
	for _, cmd := range []struct{ name, flag string }{{"run", ""}, {"provision", ""}, {"status", "-watch"}, {"backfill", "-since"}, {"audit", "-settle"}} {
		want := []string{"Usage:\n  relay " + cmd.name, "Environment", "DATABASE_URL", "Example:\n  "}
		if cmd.flag != "" {
			want = append(want, "Flags:\n", cmd.flag)
		}
		cases = append(cases,
			testutil.CLICase{Args: []string{cmd.name, "--help"}, Stdout: want},
			testutil.CLICase{Args: []string{cmd.name, "-h"}, Stdout: want},
			testutil.CLICase{Args: []string{"help", cmd.name}, Stdout: want},
			testutil.CLICase{Args: []string{cmd.name, "--bogus"}, Code: 2, OneLine: true,
				Stderr: []string{"relay: " + cmd.name + ": flag provided but not defined: -bogus", "relay " + cmd.name + " --help"}},
		)
	}
	results := testutil.CheckCLI(t, bin, cases)
	for _, cmd := range []string{"run", "provision", "status", "backfill", "audit"} {
		if a, b := results[cmd+" --help"].Stdout, results["help "+cmd].Stdout; a != b {
			t.Errorf("`relay %s --help` and `relay help %s` differ:\n%s\n---\n%s", cmd, cmd, a, b)
		}
	}
	if r := results["run"]; regexp.MustCompile("TOPSECRET").MatchString(r.Stderr) {
		t.Errorf("the password is shown: %s", r.Stderr)
	}
}

// TestCLI_RuntimeFailureExitsOne: a dependency that is down is not a usage
// mistake: `relay status` with JetStream up and Postgres unreachable reports it
// and exits 1.
func TestCLI_RuntimeFailureExitsOne(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "relay")
	nats := testutil.StartNATS(t)
	testutil.CheckCLI(t, bin, []testutil.CLICase{{
		Args: []string{"status"},
		Env: []string{"DATABASE_URL=postgres://bridge@127.0.0.1:1/app", "NATS_URLS=" + nats.URL(),
			"APP_NAME=orders", "DESTINATION_APP=billing"},
		Code:   1,
		Stdout: []string{"database:      ERROR"},
		Stderr: []string{"relay: database unreachable"},
	}})
}
