package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
)

// Status is what `relay status` prints.
type Status struct {
	Slot          *cdc.SlotInfo `json:"slot"`
	SlotName      string        `json:"slot_name"`
	ConfirmedLSN  string        `json:"confirmed_lsn,omitempty"`
	CurrentLSN    string        `json:"current_lsn,omitempty"`
	Publication   bool          `json:"publication_exists"`
	OutboxRows    int64         `json:"outbox_rows"`
	Stream        *StreamState  `json:"stream,omitempty"`
	StreamError   string        `json:"stream_error,omitempty"`
	DatabaseError string        `json:"database_error,omitempty"`
}

// StreamState is the part of the JetStream stream info an operator needs.
type StreamState struct {
	Name       string    `json:"name"`
	Subjects   []string  `json:"subjects"`
	Messages   uint64    `json:"messages"`
	Bytes      uint64    `json:"bytes"`
	FirstSeq   uint64    `json:"first_seq"`
	LastSeq    uint64    `json:"last_seq"`
	LastTime   time.Time `json:"last_time"`
	Consumers  int       `json:"consumers"`
	Replicas   int       `json:"replicas"`
	Duplicates string    `json:"duplicates_window"`
}

func (m *Main) status(ctx context.Context, args []string) error {
	flags, err := m.ParseStatusFlags(args)
	if err != nil {
		return err
	}
	c, err := m.load()
	if err != nil {
		return err
	}
	return cli.ShowStatus(ctx, &m.CLI, &c.Common, flags, cli.StatusReport[*Status]{
		Collect: func(ctx context.Context, js jetstream.JetStream) *Status { return collectStatus(ctx, c, js) },
		Print:   printStatus,
		Verdict: func(st *Status) error {
			if st.DatabaseError != "" {
				return errors.New("database unreachable")
			}
			return nil
		},
	})
}

func collectStatus(ctx context.Context, c *Config, js jetstream.JetStream) *Status {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st := &Status{SlotName: c.Slot()}
	conn, err := pgx.Connect(ctx, c.DatabaseURL)
	if err != nil {
		st.DatabaseError = err.Error()
	} else {
		defer conn.Close(context.Background())
		if st.Slot, err = cdc.ReadSlot(ctx, conn, c.Slot()); err != nil {
			st.DatabaseError = err.Error()
		} else if st.Slot != nil {
			st.ConfirmedLSN, st.CurrentLSN = st.Slot.ConfirmedLSN.String(), st.Slot.CurrentLSN.String()
		}
		conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", c.Publication).Scan(&st.Publication)
		conn.QueryRow(ctx, "SELECT coalesce((SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)), 0)", c.OutboxTable).Scan(&st.OutboxRows)
	}
	s, err := js.Stream(ctx, c.StreamName)
	if err != nil {
		st.StreamError = err.Error()
	} else {
		i := s.CachedInfo()
		st.Stream = &StreamState{Name: i.Config.Name, Subjects: i.Config.Subjects, Messages: i.State.Msgs, Bytes: i.State.Bytes,
			FirstSeq: i.State.FirstSeq, LastSeq: i.State.LastSeq, LastTime: i.State.LastTime, Consumers: i.State.Consumers,
			Replicas: i.Config.Replicas, Duplicates: i.Config.Duplicates.String()}
	}
	return st
}

func printStatus(w io.Writer, st *Status, now time.Time) {
	fmt.Fprintf(w, "relay status at %s\n\n", now.Format(time.RFC3339))
	switch {
	case st.DatabaseError != "":
		fmt.Fprintf(w, "database:      ERROR %s\n", st.DatabaseError)
	case st.Slot == nil:
		fmt.Fprintf(w, "slot:          %s (does not exist)\n", st.SlotName)
	default:
		s := st.Slot
		active := "inactive (no relay attached)"
		if s.Active {
			active = fmt.Sprintf("active, pid %d", s.ActivePID)
		}
		fmt.Fprintf(w, "slot:          %s (%s, database %s)\n", s.Name, active, s.Database)
		fmt.Fprintf(w, "confirmed lsn: %s (server at %s)\n", st.ConfirmedLSN, st.CurrentLSN)
		fmt.Fprintf(w, "lag:           %s behind", bytesHuman(s.LagBytes))
		if s.Active {
			fmt.Fprintf(w, ", flush lag %s", s.FlushLag)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "wal retained:  %s (wal_status %s", bytesHuman(s.RetainedBytes), s.WALStatus)
		if s.SafeWALSize != nil {
			fmt.Fprintf(w, ", %s left before the slot is lost", bytesHuman(*s.SafeWALSize))
		}
		fmt.Fprintln(w, ")")
	}
	if st.DatabaseError == "" {
		fmt.Fprintf(w, "publication:   exists=%v, outbox rows ~%d\n", st.Publication, st.OutboxRows)
	}
	if st.Stream == nil {
		fmt.Fprintf(w, "stream:        ERROR %s\n", st.StreamError)
		return
	}
	s := st.Stream
	fmt.Fprintf(w, "stream:        %s %v\n", s.Name, s.Subjects)
	fmt.Fprintf(w, "               %d messages, %s, seq %d..%d, last %s, %d consumers, R%d, dedupe %s\n",
		s.Messages, bytesHuman(int64(s.Bytes)), s.FirstSeq, s.LastSeq, s.LastTime.Format(time.RFC3339), s.Consumers, s.Replicas, s.Duplicates)
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
