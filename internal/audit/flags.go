package audit

import (
	"encoding/json"
	"flag"
	"io"
	"strings"
	"time"
)

// Flags are the command-line flags both audit subcommands take.
type Flags struct {
	Since  string
	JSON   bool
	Limit  int
	Page   int
	Settle time.Duration
	Margin time.Duration
	Strict bool
	// Subjects overrides the subjects read (comma-separated).
	Subjects string
}

// Define registers the flags on fs.
func (f *Flags) Define(fs *flag.FlagSet, withMargin bool, subjectsHelp string) {
	fs.StringVar(&f.Subjects, "subjects", "", subjectsHelp)
	fs.StringVar(&f.Since, "since", "", "audit events since this time: RFC 3339, a duration ago (1h), or all; required")
	fs.BoolVar(&f.JSON, "json", false, "print the report as JSON")
	fs.IntVar(&f.Limit, "limit", 10, "example event ids to print per finding")
	fs.IntVar(&f.Page, "page", 10000, "stream messages read and copied to the database per round trip")
	fs.DurationVar(&f.Settle, "settle", 5*time.Second, "when something looks missing, wait this long and look again (0 = never)")
	fs.BoolVar(&f.Strict, "strict", false, "exit 3 on any finding, not only on a gap")
	if withMargin {
		fs.DurationVar(&f.Margin, "margin", time.Minute, "read the stream from this long before --since (clock skew between database and NATS)")
	}
}

// Options turns the flags into Options.
func (f *Flags) Options(now time.Time) (Options, error) {
	since, err := ParseSince(f.Since, now)
	if err != nil {
		return Options{}, err
	}
	return Options{Since: since, Margin: f.Margin, Settle: f.Settle, Page: max(f.Page, 1), Limit: max(f.Limit, 0), Strict: f.Strict}, nil
}

// SubjectList is --subjects split at commas, blanks dropped.
func (f *Flags) SubjectList() []string {
	var out []string
	for _, s := range strings.Split(f.Subjects, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Write prints a report as JSON or, through table, as text.
func Write[R any](w io.Writer, asJSON bool, rep R, table func(io.Writer, R)) error {
	if !asJSON {
		table(w, rep)
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
