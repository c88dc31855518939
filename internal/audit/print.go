package audit

import (
	"fmt"
	"io"
	"strings"
)

// PrintRelay writes the human table of a relay audit.
func PrintRelay(w io.Writer, r *RelayReport) {
	fmt.Fprintf(w, "relay audit since %s: outbox %s against stream %s (%s)\n\n", r.Since, r.OutboxTable, r.Stream, strings.Join(r.Subjects, ", "))
	row := func(name string, n int64, note string) { fmt.Fprintf(w, "  %-14s %10d  %s\n", name, n, note) }
	row("outbox rows", r.Rows, "")
	row("messages read", r.Messages, "")
	row("published", r.Published, "")
	row("dead-lettered", r.DeadLettered, "on the DLQ subject only (see sink dlq list)")
	row("missing", r.Missing, mark(r.Missing, "GAP: not in the stream (relay backfill --since republishes)"))
	row("stored twice", r.StoredTwice, mark(r.StoredTwice, "sinks' inboxes drop the copies"))
	row("out of order", r.OutOfOrder, mark(r.OutOfOrder, "stored after an event of a later commit"))
	if r.Rechecked {
		fmt.Fprintln(w, "\n  (looked again after --settle)")
	}
	list(w, "missing", r.MissingIDs)
	list(w, "dead-lettered", r.DeadLetteredIDs)
	if len(r.StoredTwiceIDs) > 0 {
		fmt.Fprintln(w, "\nstored twice:")
		for _, d := range r.StoredTwiceIDs {
			fmt.Fprintf(w, "  %s  stream seqs %v\n", d.EventID, d.Seqs)
		}
	}
	if len(r.OutOfOrderAt) > 0 {
		fmt.Fprintln(w, "\nout of order:")
		for _, b := range r.OutOfOrderAt {
			fmt.Fprintf(w, "  seq %d %s at %s, after seq %d %s at %s\n", b.Seq, b.EventID, b.Position, b.AfterSeq, b.AfterID, b.AfterPos)
		}
	}
}

// PrintSink writes the human table of a sink audit.
func PrintSink(w io.Writer, r *SinkReport) {
	fmt.Fprintf(w, "sink audit since %s: stream %s (%s) against inbox %s\n\n", r.Since, r.Stream, strings.Join(r.Subjects, ", "), r.InboxTable)
	row := func(name string, n int64, note string) { fmt.Fprintf(w, "  %-14s %10d  %s\n", name, n, note) }
	row("messages read", r.Messages, "")
	row("events", r.Events, "distinct event ids")
	if r.NoID > 0 {
		row("without id", r.NoID, "no Nats-Msg-Id: cannot be matched")
	}
	row("applied", r.Counts[Applied], "")
	row("not applied", r.Counts[NotApplied], mark(r.Counts[NotApplied], "GAP: no inbox row, or received/processing/failed"))
	row("dead", r.Counts[Dead], mark(r.Counts[Dead], "dead-lettered (sink dlq list / replay)"))
	row("stale", r.Counts[Stale], mark(r.Counts[Stale], "discarded as older than their key's newest"))
	if r.Rechecked {
		fmt.Fprintln(w, "\n  (looked again after --settle)")
	}
	for _, c := range []string{NotApplied, Dead, Stale} {
		ex := r.Examples[c]
		if len(ex) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", strings.ReplaceAll(c, "_", " "))
		for _, e := range ex {
			st := e.Status
			if st == "" {
				st = "no inbox row"
			}
			fmt.Fprintf(w, "  %s  stream seq %d  (%s)\n", e.EventID, e.Seq, st)
		}
	}
}

func mark(n int64, note string) string {
	if n == 0 {
		return ""
	}
	return note
}

func list(w io.Writer, title string, ids []string) {
	if len(ids) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", title)
	for _, id := range ids {
		fmt.Fprintf(w, "  %s\n", id)
	}
}
