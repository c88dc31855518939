package audit

import (
	"flag"
	"fmt"
	"time"
)

// Window says which events an audit covers.
type Window struct {
	Since  time.Time     // zero: everything the stream and the table hold (--since all)
	Margin time.Duration // the stream is read from Since-Margin (relay audit)
	Settle time.Duration // events younger than this when the audit starts are left out
	Page   int           // messages read and copied at a time (DefaultPage when 0)
	Limit  int           // example ids reported per category
}

// DefaultLimit is how many example ids a report lists per category.
const DefaultLimit = 10

func (w Window) page() int {
	if w.Page <= 0 {
		return DefaultPage
	}
	return w.Page
}

func (w Window) limit() int { return max(w.Limit, 0) }

// ParseSince reads --since: "all", an RFC 3339 time, or a duration ago
// ("90m", "1h", "24h") counted back from now.
func ParseSince(s string, now time.Time) (time.Time, error) {
	switch s {
	case "":
		return time.Time{}, fmt.Errorf("--since is required: an RFC 3339 time, a duration ago such as 1h, or all")
	case "all":
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: expected an RFC 3339 time such as 2026-01-02T15:04:05Z, a duration ago such as 1h, or all", s)
}

// Flags are the command-line flags both audit commands take.
type Flags struct {
	Since  string
	JSON   bool
	Limit  int
	Page   int
	Settle time.Duration
	Margin time.Duration
}

// Define adds the flags to fs; margin adds --margin (the relay audit's).
func (f *Flags) Define(fs *flag.FlagSet, margin bool) {
	fs.StringVar(&f.Since, "since", "", "audit events since this time: RFC 3339, a duration ago (1h), or all; required")
	fs.BoolVar(&f.JSON, "json", false, "print the report as JSON")
	fs.IntVar(&f.Limit, "limit", DefaultLimit, "example ids listed per category")
	fs.IntVar(&f.Page, "page", DefaultPage, "messages read and copied to the database at a time")
	fs.DurationVar(&f.Settle, "settle", 10*time.Second, "leave out events younger than this as possibly in flight")
	if margin {
		fs.DurationVar(&f.Margin, "margin", time.Minute, "read the stream from this long before --since (clock skew, occurred_at set by the app)")
	}
}

// Window checks the flags and returns the window they describe.
func (f *Flags) Window(now time.Time) (Window, error) {
	since, err := ParseSince(f.Since, now)
	if err != nil {
		return Window{}, err
	}
	switch {
	case f.Limit < 0:
		return Window{}, fmt.Errorf("--limit %d: expected 0 or more", f.Limit)
	case f.Page < 1 || f.Page > 100000:
		return Window{}, fmt.Errorf("--page %d: expected 1 to 100000", f.Page)
	case f.Settle < 0 || f.Margin < 0:
		return Window{}, fmt.Errorf("--settle and --margin must not be negative")
	}
	return Window{Since: since, Margin: f.Margin, Settle: f.Settle, Page: f.Page, Limit: f.Limit}, nil
}
