package config_test

import (
	"errors"
	"flag"
	"fmt"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, config.ExitOK},
		{"help", flag.ErrHelp, config.ExitOK},
		{"usage", config.Usagef("unknown command %q", "x"), config.ExitUsage},
		{"wrapped usage", fmt.Errorf("status: %w", config.Usagef("bad flag")), config.ExitUsage},
		{"marked usage", config.AsUsage(errors.New("--rate 0: expected 1 to 100000")), config.ExitUsage},
		{"gap", &config.GapError{Err: errors.New("2 events missing")}, config.ExitGap},
		{"wrapped gap", fmt.Errorf("audit: %w", &config.GapError{Err: errors.New("x")}), config.ExitGap},
		{"runtime", errors.New("database unreachable"), config.ExitFailure},
	}
	for _, tt := range tests {
		if got := config.ExitCode(tt.err); got != tt.want {
			t.Errorf("%s: ExitCode=%d, want %d", tt.name, got, tt.want)
		}
	}
	if config.AsUsage(nil) != nil || config.AsUsage(flag.ErrHelp) != flag.ErrHelp {
		t.Error("AsUsage must keep nil and a help request as they are")
	}
}
