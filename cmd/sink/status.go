package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Status is what `sink status` prints.
type Status struct {
	Consumer      *ConsumerState   `json:"consumer,omitempty"`
	ConsumerError string           `json:"consumer_error,omitempty"`
	InboxTable    string           `json:"inbox_table"`
	Inbox         map[string]int64 `json:"inbox,omitempty"` // rows by status
	DatabaseError string           `json:"database_error,omitempty"`
	// With PARTITIONS: each partition's consumer and owner, and the live
	// members (sink processes).
	Partitions []PartitionState `json:"partitions,omitempty"`
	Members    []string         `json:"members,omitempty"`
}

// ConsumerState is the part of the consumer info an operator needs.
type ConsumerState struct {
	Stream         string    `json:"stream"`
	Name           string    `json:"name"`
	FilterSubject  string    `json:"filter_subject"`
	Mode           string    `json:"mode"`                      // pull or push
	DeliverSubject string    `json:"deliver_subject,omitempty"` // push
	DeliverGroup   string    `json:"deliver_group,omitempty"`   // push
	NumPending     uint64    `json:"num_pending"`
	NumAckPending  int       `json:"num_ack_pending"`
	NumRedelivered int       `json:"num_redelivered"`
	NumWaiting     int       `json:"num_waiting"`
	AckFloorStream uint64    `json:"ack_floor_stream_seq"`
	AckFloorLast   time.Time `json:"ack_floor_last_active,omitzero"`
	DeliveredSeq   uint64    `json:"delivered_stream_seq"`
	AckWait        string    `json:"ack_wait"`
	MaxDeliver     int       `json:"max_deliver"`
	MaxAckPending  int       `json:"max_ack_pending"`
	// Warnings name settings that defeat the sink's guarantees or do not fit
	// its configuration (with AUTO_PROVISION=false nothing else checks them).
	Warnings []string `json:"warnings,omitempty"`
}

// inboxStatuses are always reported; received and processing exist only
// inside the sink's open transactions, so they show up only if something else
// writes them.
var inboxStatuses = []string{sink.StatusProcessed, sink.StatusFailed, sink.StatusDead, sink.StatusStale}

func (m *Main) status(ctx context.Context, args []string) error {
	flags, err := m.ParseStatusFlags(args)
	if err != nil {
		return err
	}
	c, err := m.load(false)
	if err != nil {
		return err
	}
	return cli.ShowStatus(ctx, &m.CLI, &c.Common, flags, cli.StatusReport[*Status]{
		Collect: func(ctx context.Context, js jetstream.JetStream) *Status {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return collectStatus(ctx, c, js)
		},
		Print: printStatus,
		Verdict: func(st *Status) error {
			switch {
			case st.DatabaseError != "":
				return errors.New("database unreachable")
			case st.ConsumerError != "":
				return errors.New("consumer unavailable")
			}
			return nil
		},
	})
}

func collectStatus(ctx context.Context, c *Config, js jetstream.JetStream) *Status {
	st := &Status{InboxTable: c.InboxTable}
	// With PARTITIONS there is one consumer per partition, collected with
	// the owners below.
	if i, err := consumerInfo(ctx, c, js); err != nil {
		st.ConsumerError = err.Error()
	} else if i != nil {
		cs := &ConsumerState{Stream: i.Stream, Name: i.Name, FilterSubject: i.Config.FilterSubject, Mode: "pull",
			DeliverSubject: i.Config.DeliverSubject, DeliverGroup: i.Config.DeliverGroup,
			NumPending: i.NumPending, NumAckPending: i.NumAckPending, NumRedelivered: i.NumRedelivered,
			NumWaiting: i.NumWaiting, AckFloorStream: i.AckFloor.Stream, DeliveredSeq: i.Delivered.Stream,
			AckWait: i.Config.AckWait.String(), MaxDeliver: i.Config.MaxDeliver, MaxAckPending: i.Config.MaxAckPending,
			Warnings: provision.CheckBound(i, c.consumerSpec())}
		if cs.DeliverSubject != "" {
			cs.Mode = "push"
		}
		if i.AckFloor.Last != nil {
			cs.AckFloorLast = *i.AckFloor.Last
		}
		st.Consumer = cs
	}
	conn, err := pgx.Connect(ctx, c.DatabaseURL)
	if err != nil {
		st.DatabaseError = err.Error()
		return st
	}
	defer conn.Close(context.Background())
	if c.Partitions > 0 {
		collectPartitions(ctx, c, js, conn, st)
	}
	table, _ := migrations.QuoteQualified(c.InboxTable) // validated
	rows, err := conn.Query(ctx, "SELECT status, count(*) FROM "+table+" GROUP BY status")
	if err != nil {
		st.DatabaseError = err.Error()
		return st
	}
	st.Inbox = map[string]int64{}
	for _, s := range inboxStatuses {
		st.Inbox[s] = 0
	}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			st.DatabaseError = err.Error()
			break
		}
		st.Inbox[s] = n
	}
	if err := rows.Err(); err != nil {
		st.DatabaseError = err.Error()
	}
	return st
}

// consumerInfo is the durable's info; nil without error with PARTITIONS.
func consumerInfo(ctx context.Context, c *Config, js jetstream.JetStream) (*jetstream.ConsumerInfo, error) {
	if c.Partitions > 0 {
		return nil, nil
	}
	return provision.ConsumerInfo(ctx, js, c.StreamName, c.Durable(), c.Push())
}

func printStatus(w io.Writer, st *Status, now time.Time) {
	fmt.Fprintf(w, "sink status at %s\n\n", now.Format(time.RFC3339))
	if cs := st.Consumer; cs != nil {
		fmt.Fprintf(w, "consumer:      %s on stream %s, filter %s, %s", cs.Name, cs.Stream, cs.FilterSubject, cs.Mode)
		if cs.Mode == "push" {
			fmt.Fprintf(w, " to %s (queue group %s)", cs.DeliverSubject, cs.DeliverGroup)
		}
		fmt.Fprintf(w, "\n               %d pending, %d awaiting ack, %d redelivered", cs.NumPending, cs.NumAckPending, cs.NumRedelivered)
		if cs.Mode == "pull" {
			fmt.Fprintf(w, ", %d pull requests waiting", cs.NumWaiting)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "ack floor:     stream seq %d", cs.AckFloorStream)
		if !cs.AckFloorLast.IsZero() {
			fmt.Fprintf(w, " (last ack %s)", cs.AckFloorLast.Format(time.RFC3339))
		}
		fmt.Fprintf(w, ", delivered up to %d\n", cs.DeliveredSeq)
		fmt.Fprintf(w, "settings:      ack wait %s, max deliver %d, max ack pending %d\n", cs.AckWait, cs.MaxDeliver, cs.MaxAckPending)
		for _, warn := range cs.Warnings {
			fmt.Fprintf(w, "WARNING:       %s\n", warn)
		}
	} else if len(st.Partitions) > 0 {
		printPartitions(w, st)
	} else {
		fmt.Fprintf(w, "consumer:      ERROR %s\n", st.ConsumerError)
	}
	if st.DatabaseError != "" {
		fmt.Fprintf(w, "inbox:         %s ERROR %s\n", st.InboxTable, st.DatabaseError)
		return
	}
	fmt.Fprintf(w, "inbox:         %s\n", st.InboxTable)
	names := slices.Sorted(maps.Keys(st.Inbox))
	slices.SortStableFunc(names, func(a, b string) int { return rank(a) - rank(b) })
	for _, s := range names {
		fmt.Fprintf(w, "  %-11s  %d\n", s, st.Inbox[s])
	}
}

// rank orders the usual statuses first.
func rank(s string) int {
	if i := slices.Index(inboxStatuses, s); i >= 0 {
		return i
	}
	return len(inboxStatuses)
}
