package audit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// SinkOptions configure AuditSink.
type SinkOptions struct {
	Options
	InboxTable string // quoted, schema-qualified
}

// Categories of a stream message seen from the inbox.
const (
	Applied    = "applied"     // inbox row processed
	NotApplied = "not_applied" // no inbox row, or received / processing / failed: a gap
	Dead       = "dead"        // inbox row dead, or a copy on the DLQ subject
	Stale      = "stale"       // discarded as older than its key's newest (SKIP_STALE)
)

// SinkReport is what `sink audit` prints.
type SinkReport struct {
	Since      string   `json:"since"`
	Stream     string   `json:"stream"`
	Subjects   []string `json:"subjects"`
	InboxTable string   `json:"inbox_table"`

	Messages  int64                `json:"messages"`           // stream messages read on the subjects
	Events    int64                `json:"events"`             // distinct event ids among them
	NoID      int64                `json:"without_id"`         // messages without Nats-Msg-Id: cannot be matched
	Counts    map[string]int64     `json:"counts"`             // events by category
	Examples  map[string][]Example `json:"examples,omitempty"` // first events by category, stream order
	Rechecked bool                 `json:"rechecked,omitempty"`
}

// Example is one event of a category.
type Example struct {
	EventID string `json:"event_id"`
	Seq     uint64 `json:"stream_seq"`
	Status  string `json:"inbox_status,omitempty"` // "" = no inbox row
}

func (r *SinkReport) verdict(strict bool) error {
	var what []string
	if n := r.Counts[NotApplied]; n > 0 {
		what = append(what, fmt.Sprintf("%d events not applied", n))
	}
	if strict {
		for _, c := range []string{Dead, Stale} {
			if n := r.Counts[c]; n > 0 {
				what = append(what, fmt.Sprintf("%d events %s", n, c))
			}
		}
	}
	if len(what) == 0 {
		return nil
	}
	return &GapError{What: strings.Join(what, ", ")}
}

// AuditSink compares the stream's messages on the sink's subjects with the
// inbox of conn's database. conn must not be in a transaction.
func AuditSink(ctx context.Context, conn *pgx.Conn, js jetstream.JetStream, o SinkOptions) (*SinkReport, error) {
	o.defaults()
	rep := &SinkReport{Since: sinceText(o.Since), Stream: o.Stream, Subjects: o.Subjects, InboxTable: o.InboxTable}
	// The temporary table lives as long as the session; the audit drops it
	// when done so conn can be reused.
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE bridge_audit_sink (event_id text NOT NULL, seq bigint NOT NULL, dead bool NOT NULL)`); err != nil {
		return nil, fmt.Errorf("create audit table: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS bridge_audit_sink`)
	load := func(dead bool) func([]Message) error {
		return func(page []Message) error {
			rows := make([][]any, 0, len(page))
			for i := range page {
				m := &page[i]
				id := m.MsgID
				if dead {
					id = strings.TrimPrefix(id, envelope.DLQPrefix)
				} else {
					rep.Messages++
				}
				if id == "" {
					if !dead {
						rep.NoID++
					}
					continue
				}
				rows = append(rows, []any{id, int64(m.Seq), dead})
			}
			if len(rows) == 0 {
				return nil
			}
			if _, err := conn.CopyFrom(ctx, pgx.Identifier{"bridge_audit_sink"}, []string{"event_id", "seq", "dead"}, pgx.CopyFromRows(rows)); err != nil {
				return fmt.Errorf("copy stream page: %w", err)
			}
			return nil
		}
	}
	if _, err := scan(ctx, js, scanRange{stream: o.Stream, subjects: o.Subjects, from: o.Since, page: o.Page}, load(false)); err != nil {
		return nil, err
	}
	// Dead letters are stored after their original, so the same lower bound
	// finds every copy that matters.
	if o.DLQ != "" {
		if _, err := scan(ctx, js, scanRange{stream: o.Stream, subjects: []string{o.DLQ}, from: o.Since, page: o.Page}, load(true)); err != nil {
			return nil, err
		}
	}
	if _, err := conn.Exec(ctx, `CREATE INDEX ON bridge_audit_sink (event_id); ANALYZE bridge_audit_sink`); err != nil {
		return nil, fmt.Errorf("index audit table: %w", err)
	}
	if err := sinkClassify(ctx, conn, o, rep); err != nil {
		return nil, err
	}
	if rep.Counts[NotApplied] > 0 && o.Settle > 0 {
		// The sink may only be behind; give it the settle time.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(o.Settle):
		}
		if err := sinkClassify(ctx, conn, o, rep); err != nil {
			return nil, err
		}
		rep.Rechecked = true
	}
	return rep, rep.verdict(o.Strict)
}

// sinkClassify counts the events by category and lists the first of each.
func sinkClassify(ctx context.Context, conn *pgx.Conn, o SinkOptions, rep *SinkReport) error {
	classified := `
		WITH m AS (SELECT event_id, min(seq) AS seq FROM bridge_audit_sink WHERE NOT dead GROUP BY event_id),
		c AS (
			SELECT m.event_id, m.seq, coalesce(i.status, '') AS status,
				CASE
					WHEN i.status = 'processed' THEN 'applied'
					WHEN i.status = 'stale' THEN 'stale'
					WHEN i.status = 'dead' THEN 'dead'
					WHEN EXISTS (SELECT 1 FROM bridge_audit_sink d WHERE d.dead AND d.event_id = m.event_id) THEN 'dead'
					ELSE 'not_applied'
				END AS category
			FROM m LEFT JOIN ` + o.InboxTable + ` i ON i.event_id = m.event_id)`
	rep.Counts = map[string]int64{Applied: 0, NotApplied: 0, Dead: 0, Stale: 0}
	rep.Examples = nil
	rows, err := conn.Query(ctx, classified+` SELECT category, count(*) FROM c GROUP BY category`)
	if err != nil {
		return fmt.Errorf("compare stream with inbox: %w", err)
	}
	rep.Events = 0
	for rows.Next() {
		var cat string
		var n int64
		if err := rows.Scan(&cat, &n); err != nil {
			rows.Close()
			return fmt.Errorf("compare stream with inbox: %w", err)
		}
		rep.Counts[cat] = n
		rep.Events += n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("compare stream with inbox: %w", err)
	}
	if o.Limit == 0 {
		return nil
	}
	rows, err = conn.Query(ctx, classified+`
		SELECT category, event_id, seq, status FROM (
			SELECT c.*, row_number() OVER (PARTITION BY category ORDER BY seq) AS n FROM c WHERE category <> 'applied') x
		WHERE n <= $1 ORDER BY category, seq`, o.Limit)
	if err != nil {
		return fmt.Errorf("list events by category: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var cat string
		var e Example
		var seq int64
		if err := rows.Scan(&cat, &e.EventID, &seq, &e.Status); err != nil {
			return fmt.Errorf("list events by category: %w", err)
		}
		e.Seq = uint64(seq)
		if rep.Examples == nil {
			rep.Examples = map[string][]Example{}
		}
		rep.Examples[cat] = append(rep.Examples[cat], e)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list events by category: %w", err)
	}
	return nil
}
