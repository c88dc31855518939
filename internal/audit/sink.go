package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// SinkOptions say what the sink audit compares.
type SinkOptions struct {
	Window
	Stream     string // JetStream stream name
	Filter     string // the sink's FILTER_SUBJECT (wildcards allowed)
	InboxTable string // quoted schema.table
}

// SinkReport is the result of Sink. Events are counted once each, however
// many times the stream holds them.
type SinkReport struct {
	Since    *time.Time `json:"since"`
	Until    time.Time  `json:"until"` // messages stored after this were left out (settle)
	Stream   string     `json:"stream"`
	Filter   string     `json:"filter"`
	Messages int64      `json:"messages_read"`
	Events   int64      `json:"events"` // distinct event ids among them

	Applied       int64    `json:"applied"`
	NotApplied    int64    `json:"not_applied"` // no inbox row, or received, processing, failed
	NotAppliedIDs []string `json:"not_applied_ids,omitempty"`
	Dead          int64    `json:"dead"`
	DeadIDs       []string `json:"dead_ids,omitempty"`
	Stale         int64    `json:"stale"`
	StaleIDs      []string `json:"stale_ids,omitempty"`
	// Unidentified messages name no event in their headers or body (poison
	// the sink dead-letters without an inbox row).
	Unidentified     int64    `json:"unidentified"`
	UnidentifiedSeqs []uint64 `json:"unidentified_seqs,omitempty"`
}

// Gap reports events stored in the stream and not applied: nothing in the
// inbox, or a row still received, processing or failed. Dead events are not
// a gap: they are in the DLQ with their reason (sink dlq list).
func (r *SinkReport) Gap() error {
	if r.NotApplied == 0 {
		return nil
	}
	return fmt.Errorf("%d events in the stream not applied", r.NotApplied)
}

// Sink compares the stream's messages on the sink's filter subject with the
// inbox. conn is a session of its own: the audit creates a temporary table
// in it.
func Sink(ctx context.Context, conn *pgx.Conn, js jetstream.JetStream, o SinkOptions) (*SinkReport, error) {
	rep := &SinkReport{Until: time.Now().Add(-o.Settle).UTC(), Stream: o.Stream, Filter: o.Filter}
	if !o.Since.IsZero() {
		t := o.Since.UTC()
		rep.Since = &t
	}
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS audit_sink_msgs (seq bigint NOT NULL, event_id text NOT NULL);
		TRUNCATE audit_sink_msgs`); err != nil {
		return nil, fmt.Errorf("create temporary table: %w", err)
	}
	stream, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", o.Stream, err)
	}
	limit := o.limit()
	rowsBuf := make([][]any, 0, o.page())
	err = readStream(ctx, js, o.Stream, []string{o.Filter}, o.Since, o.page(), func(page []message) error {
		rowsBuf = rowsBuf[:0]
		for i := range page {
			m := &page[i]
			if m.Time.After(rep.Until) {
				continue
			}
			rep.Messages++
			id, err := eventID(ctx, stream, m)
			if err != nil {
				return err
			}
			if id == "" {
				rep.Unidentified++
				if len(rep.UnidentifiedSeqs) < limit {
					rep.UnidentifiedSeqs = append(rep.UnidentifiedSeqs, m.Seq)
				}
				continue
			}
			rowsBuf = append(rowsBuf, []any{int64(m.Seq), id})
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"audit_sink_msgs"}, []string{"seq", "event_id"}, pgx.CopyFromRows(rowsBuf)); err != nil {
			return fmt.Errorf("copy stream page: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `CREATE INDEX IF NOT EXISTS audit_sink_msgs_id ON audit_sink_msgs (event_id); ANALYZE audit_sink_msgs`); err != nil {
		return nil, fmt.Errorf("index temporary table: %w", err)
	}
	// One row per event: its first sequence and what the inbox says.
	events := `SELECT e.event_id, e.first, CASE coalesce(i.status, '')
			WHEN 'processed' THEN 'applied' WHEN 'dead' THEN 'dead' WHEN 'stale' THEN 'stale' ELSE 'not_applied' END AS verdict
		FROM (SELECT event_id, min(seq) AS first FROM audit_sink_msgs GROUP BY event_id) e
		LEFT JOIN ` + o.InboxTable + ` i ON i.event_id = e.event_id`
	err = conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE verdict = 'applied'),
		count(*) FILTER (WHERE verdict = 'not_applied'), count(*) FILTER (WHERE verdict = 'dead'),
		count(*) FILTER (WHERE verdict = 'stale') FROM (`+events+`) v`).
		Scan(&rep.Events, &rep.Applied, &rep.NotApplied, &rep.Dead, &rep.Stale)
	if err != nil {
		return nil, fmt.Errorf("compare stream with inbox: %w", err)
	}
	for _, c := range []struct {
		verdict string
		n       int64
		ids     *[]string
	}{{"not_applied", rep.NotApplied, &rep.NotAppliedIDs}, {"dead", rep.Dead, &rep.DeadIDs}, {"stale", rep.Stale, &rep.StaleIDs}} {
		if c.n == 0 {
			continue
		}
		rows, err := conn.Query(ctx, `SELECT event_id FROM (`+events+`) v WHERE verdict = $1 ORDER BY first LIMIT $2`, c.verdict, limit)
		if err != nil {
			return nil, fmt.Errorf("list %s events: %w", c.verdict, err)
		}
		if *c.ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("list %s events: %w", c.verdict, err)
		}
	}
	return rep, nil
}

// eventID names the event of a message as the sink's inbox does. The inbox
// keys on the envelope's event_id, which every bridge publisher also sends
// as Nats-Msg-Id; a replayed dead letter's id is "replay-…", and a message
// without an id header can only be named by its body, so those bodies are
// fetched one by one.
func eventID(ctx context.Context, s jetstream.Stream, m *message) (string, error) {
	if id := msgID(m.Header); id != "" && !strings.HasPrefix(id, "replay-") {
		return id, nil
	}
	raw, err := s.GetMsg(ctx, m.Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", nil // deleted since it was read
	}
	if err != nil {
		return "", fmt.Errorf("read message %d: %w", m.Seq, err)
	}
	env, err := envelope.Parse(raw.Data)
	if err != nil {
		return "", nil
	}
	return env.EventID, nil
}
