package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// dlq runs `sink dlq list` and `sink dlq replay` (sub).
func (m *Main) dlq(ctx context.Context, sub string, args []string) error {
	var (
		asJSON, all, dryRun bool
		eventID, class      string
	)
	if err := m.Flags("dlq "+sub, args, func(fs *flag.FlagSet) {
		fs.StringVar(&eventID, "event-id", "", "only the dead letters of this event")
		fs.StringVar(&class, "class", "", "only dead letters of this class (poison, handler, exhausted, relay)")
		if sub == "list" {
			fs.BoolVar(&asJSON, "json", false, "print JSON, one dead letter per line")
		} else {
			fs.BoolVar(&all, "all", false, "replay every dead letter")
			fs.BoolVar(&dryRun, "dry-run", false, "print what would be replayed, publish nothing")
		}
	}); err != nil {
		return err
	}
	if sub == "replay" && eventID == "" && class == "" && !all {
		return cli.Usagef("dlq replay: choose what to replay with --event-id, --class or --all (see sink dlq replay --help)")
	}
	c, err := m.load(false)
	if err != nil {
		return err
	}
	nc, js, err := m.ConnectJetStream(ctx, &c.Common, "dlq")
	if err != nil {
		return err
	}
	defer nc.Close()
	match := func(dl *sink.DeadLetter) bool {
		return (eventID == "" || dl.EventID == eventID) && (class == "" || dl.Class == class)
	}
	// On a work-queue stream a replayed dead letter is deleted by its
	// sequence once the replay is stored, or the next replay would send it
	// again; elsewhere the DLQ is history and stays.
	remove := false
	if sub == "replay" && !dryRun {
		if remove, err = sink.RemovesReplayed(ctx, js, c.StreamName); err != nil {
			return err
		}
	}
	n, skipped := 0, 0
	err = sink.ListDLQ(ctx, js, c.StreamName, c.DLQ(), func(dl *sink.DeadLetter) error {
		if !match(dl) {
			return nil
		}
		n++
		switch {
		case sub == "list" && asJSON:
			b, err := json.Marshal(dl)
			if err != nil {
				return fmt.Errorf("encode dead letter %d: %w", dl.Sequence, err)
			}
			_, err = fmt.Fprintf(m.Stdout, "%s\n", b)
			return err
		case sub == "list":
			fmt.Fprintf(m.Stdout, "seq %d  %s  event %s (%s)  class %s  deliveries %d  from %s\n  error: %s\n",
				dl.Sequence, dl.FailedAt, dl.EventID, dl.EventType, dl.Class, dl.Deliveries, dl.OriginalSubject, dl.Error)
			return nil
		}
		msg, err := sink.ReplayMessage(dl)
		if (errors.Is(err, sink.ErrStubDeadLetter) || errors.Is(err, sink.ErrNoOriginalSubject)) && eventID == "" {
			// One dead letter that cannot be replayed (a stub, or one that
			// names no subject) does not stop a replay of many: it is
			// reported, and the command fails at the end so that it is not
			// missed.
			skipped++
			fmt.Fprintf(m.Stdout, "skipped seq %d event %s: %v\n", dl.Sequence, dl.EventID, err)
			return nil
		}
		if err != nil {
			return err
		}
		if dryRun {
			fmt.Fprintf(m.Stdout, "would replay seq %d event %s to %s as %s\n", dl.Sequence, dl.EventID, msg.Subject, msg.Header.Get("Nats-Msg-Id"))
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ack, err := js.PublishMsg(pctx, msg)
		if err != nil {
			return fmt.Errorf("replay dead letter %d (event %s): %w", dl.Sequence, dl.EventID, err)
		}
		note := ""
		if ack.Duplicate {
			note = " (already replayed within the duplicate window: not stored again)"
		}
		fmt.Fprintf(m.Stdout, "replayed seq %d event %s to %s as seq %d%s\n", dl.Sequence, dl.EventID, msg.Subject, ack.Sequence, note)
		if remove {
			if err := sink.RemoveDeadLetter(pctx, js, c.StreamName, dl.Sequence); err != nil {
				return fmt.Errorf("remove replayed dead letter %d from the work queue (replay stored as seq %d): %w", dl.Sequence, ack.Sequence, err)
			}
			fmt.Fprintf(m.Stdout, "removed dead letter seq %d from the work queue\n", dl.Sequence)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if sub == "list" && !asJSON {
		fmt.Fprintf(m.Stdout, "%d dead letters on %s\n", n, c.DLQ())
	} else if sub == "replay" {
		verb := "replayed"
		if dryRun {
			verb = "would replay"
		}
		fmt.Fprintf(m.Stdout, "%s %d dead letters\n", verb, n-skipped)
		if skipped > 0 {
			return fmt.Errorf("%d dead letters not replayed (see the skipped lines above): a stub of a message too large to dead-letter whole, or no original subject", skipped)
		}
	}
	return nil
}
