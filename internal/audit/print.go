package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
)

// Print writes the report as a table: one line per category with its count
// and the first ids.
func (r *RelayReport) Print(w io.Writer) {
	fmt.Fprintf(w, "relay audit of stream %s %v\n", r.Stream, r.Subjects)
	fmt.Fprintf(w, "rows committed %s to %s (younger ones left out as in flight); %d messages read\n\n",
		since(r.Since), r.Until.Format(time.RFC3339), r.Messages)
	row(w, "rows", r.Rows, "")
	row(w, "published", r.Published, "")
	row(w, "dead-lettered", r.DeadLettered, "relay dead letters on the DLQ subject")
	row(w, "missing", r.Missing, strings.Join(r.MissingIDs, " "))
	var dups []string
	for _, d := range r.Duplicates {
		dups = append(dups, strings.Join(d.IDs, "=")+"@"+joinSeqs(d.Seqs))
	}
	row(w, "stored twice", r.StoredTwice, strings.Join(dups, " "))
	var vs []string
	for _, v := range r.Violations {
		vs = append(vs, fmt.Sprintf("seq %d %s at %s after %s", v.Seq, v.ID, v.Position, v.After))
	}
	row(w, "out of order", r.OutOfOrder, strings.Join(vs, "; "))
	verdict(w, r.Gap())
}

// Print writes the report as a table.
func (r *SinkReport) Print(w io.Writer) {
	fmt.Fprintf(w, "sink audit of stream %s on %s\n", r.Stream, r.Filter)
	fmt.Fprintf(w, "messages stored %s to %s (younger ones left out as in flight); %d read, %d events\n\n",
		since(r.Since), r.Until.Format(time.RFC3339), r.Messages, r.Events)
	row(w, "applied", r.Applied, "")
	row(w, "not applied", r.NotApplied, strings.Join(r.NotAppliedIDs, " "))
	row(w, "dead", r.Dead, strings.Join(r.DeadIDs, " "))
	row(w, "stale", r.Stale, strings.Join(r.StaleIDs, " "))
	if r.Unidentified > 0 {
		row(w, "unidentified", r.Unidentified, "seqs "+joinSeqs(r.UnidentifiedSeqs))
	}
	verdict(w, r.Gap())
}

func since(t *time.Time) string {
	if t == nil {
		return "since the beginning"
	}
	return "from " + t.Format(time.RFC3339)
}

func row(w io.Writer, name string, n int64, examples string) {
	if examples == "" || n == 0 {
		fmt.Fprintf(w, "  %-14s %10d\n", name, n)
		return
	}
	fmt.Fprintf(w, "  %-14s %10d  %s\n", name, n, examples)
}

func verdict(w io.Writer, gap error) {
	if gap != nil {
		fmt.Fprintf(w, "\nGAP: %v\n", gap)
		return
	}
	fmt.Fprintln(w, "\nno gap")
}

func joinSeqs(seqs []uint64) string {
	s := make([]string, len(seqs))
	for i, q := range seqs {
		s[i] = strconv.FormatUint(q, 10)
	}
	return strings.Join(s, ",")
}

// Report is what an audit found: printed for a person, or as JSON, and a gap
// or none.
type Report interface {
	Print(w io.Writer)
	Gap() error
}

// Write prints rep to w, as indented JSON when asJSON, and returns a
// *cli.GapError when rep found a gap, so that the binary exits with
// cli.ExitGap.
func Write(w io.Writer, rep Report, asJSON bool) error {
	if asJSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encode report: %w", err)
		}
		fmt.Fprintf(w, "%s\n", b)
	} else {
		rep.Print(w)
	}
	if err := rep.Gap(); err != nil {
		return &cli.GapError{Err: fmt.Errorf("audit: %w", err)}
	}
	return nil
}
