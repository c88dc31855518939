package cli_test

import (
	"errors"
	"flag"
	"fmt"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, cli.ExitOK},
		{"help", flag.ErrHelp, cli.ExitOK},
		{"usage", cli.Usagef("unknown command %q", "x"), cli.ExitUsage},
		{"wrapped usage", fmt.Errorf("status: %w", cli.Usagef("bad flag")), cli.ExitUsage},
		{"marked usage", cli.AsUsage(errors.New("--rate 0: expected 1 to 100000")), cli.ExitUsage},
		{"gap", &cli.GapError{Err: errors.New("2 events missing")}, cli.ExitGap},
		{"wrapped gap", fmt.Errorf("audit: %w", &cli.GapError{Err: errors.New("x")}), cli.ExitGap},
		{"runtime", errors.New("database unreachable"), cli.ExitFailure},
	}
	for _, tt := range tests {
		if got := cli.ExitCode(tt.err); got != tt.want {
			t.Errorf("%s: ExitCode=%d, want %d", tt.name, got, tt.want)
		}
	}
	if cli.AsUsage(nil) != nil || cli.AsUsage(flag.ErrHelp) != flag.ErrHelp {
		t.Error("AsUsage must keep nil and a help request as they are")
	}
}
