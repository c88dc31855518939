package main

import (
	"bytes"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestCLI_CommandTable: every command's entry is complete and names only
// variables the sink's configuration has.
func TestCLI_CommandTable(t *testing.T) {
	if err := newMain(&bytes.Buffer{}, &bytes.Buffer{}, nil).Check(); err != nil {
		t.Fatal(err)
	}
}

// TestCLI_HelpVersionAndExitStatus drives the built sink through every
// command's --help, `help COMMAND`, the dlq group, version, and mistakes:
// help goes to stdout with status 0; an unknown command or flag, a bad
// variable or a missing argument is reported on stderr with status 2; a
// dependency that is down is status 1.
func TestCLI_HelpVersionAndExitStatus(t *testing.T) {
	t.Parallel()
	bin := testutil.BuildBinary(t, "sink")
	nats := testutil.StartNATS(t)
	valid := []string{"DATABASE_URL=postgres://bridge@127.0.0.1:1/app", "APP_NAME=billing", "DESTINATION_APP=orders"}
	versionLine := `^sink \S+, revision (unknown|[0-9a-f]{40}( \([^)]*\))?), ` + regexp.QuoteMeta(runtime.Version()) + ` \S+/\S+\n$`
	cases := []testutil.CLICase{
		{Args: []string{"--help"}, Stdout: []string{"sink dlq replay", "sink help [COMMAND]", "sink version",
			"Exit status: 0 success, 1 runtime failure, 2 usage or configuration error", "BACKOFF", "1s,5s,15s,30s,60s"}},
		{Args: []string{"version"}, Match: versionLine},
		{Args: []string{"--version"}, Match: versionLine},
		{Args: []string{"nosuch"}, Code: 2, OneLine: true,
			Stderr: []string{`sink: unknown command "nosuch"; valid commands: run, provision, status, dlq, audit, version, help`}},
		// The dlq group: help is not an error; a missing or unknown command is.
		{Args: []string{"dlq", "--help"}, Stdout: []string{"sink dlq list", "sink dlq replay"}},
		{Args: []string{"help", "dlq"}, Stdout: []string{"sink dlq list", "sink dlq replay"}},
		{Args: []string{"dlq"}, Code: 2, OneLine: true, Stderr: []string{"dlq: expected a command: list, replay"}},
		{Args: []string{"dlq", "purge"}, Code: 2, OneLine: true, Stderr: []string{`unknown command "purge"; valid commands: list, replay`}},
		{Args: []string{"dlq", "replay"}, Env: valid, Code: 2, OneLine: true, Stderr: []string{"--event-id, --class or --all"}},
		{Args: []string{"audit"}, Env: valid, Code: 2, OneLine: true, Stderr: []string{"--since is required"}},
		// Configuration errors: nothing is attempted, status 2.
		{Args: []string{"run"}, Env: valid, Code: 2, Stderr: []string{"HANDLER or ROUTES_FILE is required"}},
		{Args: []string{"status"}, Env: append(valid, "BATCH_SIZE=many"), Code: 2, Stderr: []string{`BATCH_SIZE="many"`}},
		// A dependency down: status 1.
		{Args: []string{"status"}, Env: append(valid, "NATS_URLS="+nats.URL()), Code: 1,
			Stdout: []string{"ERROR"}, Stderr: []string{"sink: database unreachable"}},
	}
	commands := []struct{ name, flag string }{
		{"run", ""}, {"provision", ""}, {"status", "-json"}, {"dlq list", "-event-id"}, {"dlq replay", "-all"}, {"audit", "-since"},
	}
	for _, cmd := range commands {
		args := strings.Fields(cmd.name)
		want := []string{"Usage:\n  sink " + cmd.name, "Environment", "DATABASE_URL", "Example:\n  "}
		if cmd.flag != "" {
			want = append(want, "Flags:\n", cmd.flag)
		}
		cases = append(cases,
			testutil.CLICase{Args: append(args, "--help"), Stdout: want},
			testutil.CLICase{Args: append(args, "-h"), Stdout: want},
			testutil.CLICase{Args: append([]string{"help"}, args...), Stdout: want},
			testutil.CLICase{Args: append(args, "--bogus"), Code: 2, OneLine: true,
				Stderr: []string{"sink: " + cmd.name + ": flag provided but not defined: -bogus", "sink " + cmd.name + " --help"}},
		)
	}
	results := testutil.CheckCLI(t, bin, cases)
	for _, cmd := range commands {
		if a, b := results[cmd.name+" --help"].Stdout, results["help "+cmd.name].Stdout; a != b {
			t.Errorf("`sink %s --help` and `sink help %s` differ:\n%s\n---\n%s", cmd.name, cmd.name, a, b)
		}
	}
	// Only run needs a handler; the other commands' help does not list it.
	if out := results["status --help"].Stdout; strings.Contains(out, "HANDLER") || !strings.Contains(out, "INBOX_TABLE") {
		t.Errorf("status --help should list INBOX_TABLE and not HANDLER:\n%s", out)
	}
	if out := results["run --help"].Stdout; !strings.Contains(out, "ROUTES_FILE") {
		t.Errorf("run --help lacks ROUTES_FILE:\n%s", out)
	}
}
