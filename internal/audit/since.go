package audit

import (
	"fmt"
	"strings"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
)

// ParseSince reads --since: "all" (zero time), an RFC 3339 time, or a
// duration ago ("1h", "90m", a bare number of seconds as everywhere else).
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return time.Time{}, fmt.Errorf("--since is required: an RFC 3339 time, a duration ago such as 1h, or all")
	case "all":
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := config.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: expected an RFC 3339 time such as 2026-01-02T15:04:05Z, a duration ago such as 1h, or all", s)
}

// GapError is the verdict of an audit that found something missing. The
// binaries exit with ExitCode when they return it.
type GapError struct{ What string }

func (e *GapError) Error() string { return "audit found a gap: " + e.What }

// ExitCode is the process exit status for a gap, apart from 1 (could not audit).
func (e *GapError) ExitCode() int { return 3 }
