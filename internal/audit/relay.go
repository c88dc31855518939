package audit

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// Options are the knobs both audits share.
type Options struct {
	Stream   string
	Subjects []string  // consumer filter for the audited messages
	DLQ      string    // the DLQ subject whose copies account for dead events
	Since    time.Time // zero = everything
	Margin   time.Duration
	Settle   time.Duration
	Page     int // messages per fetch and per COPY
	Limit    int // example ids per finding
	Strict   bool
}

func (o *Options) defaults() {
	if o.Page <= 0 {
		o.Page = 10000
	}
	if o.Limit < 0 {
		o.Limit = 0
	}
}

// RelayOptions configure AuditRelay.
type RelayOptions struct {
	Options
	OutboxTable string // quoted, schema-qualified
}

// RelayReport is what `relay audit` prints.
type RelayReport struct {
	Since       string   `json:"since"` // RFC 3339 or "all"
	Stream      string   `json:"stream"`
	Subjects    []string `json:"subjects"`
	OutboxTable string   `json:"outbox_table"`

	Rows         int64 `json:"rows"`          // outbox rows audited
	Messages     int64 `json:"messages"`      // stream messages read
	Published    int64 `json:"published"`     // rows with a message on a publish subject
	DeadLettered int64 `json:"dead_lettered"` // rows only on the DLQ subject
	Missing      int64 `json:"missing"`       // rows with no message at all: a gap
	StoredTwice  int64 `json:"stored_twice"`  // rows stored more than once on a publish subject
	OutOfOrder   int64 `json:"out_of_order"`  // messages whose position is below the one before

	MissingIDs      []string     `json:"missing_ids,omitempty"`
	DeadLetteredIDs []string     `json:"dead_lettered_ids,omitempty"`
	StoredTwiceIDs  []Duplicate  `json:"stored_twice_ids,omitempty"`
	OutOfOrderAt    []OrderBreak `json:"out_of_order_at,omitempty"`
	Rechecked       bool         `json:"rechecked,omitempty"` // looked again after --settle
}

// Duplicate is an event stored more than once.
type Duplicate struct {
	EventID string   `json:"event_id"`
	Seqs    []uint64 `json:"stream_seqs"`
}

// OrderBreak is a message stored after one with a later source position.
type OrderBreak struct {
	Seq      uint64 `json:"stream_seq"`
	EventID  string `json:"event_id"`
	Position string `json:"position"`
	AfterSeq uint64 `json:"after_stream_seq"`
	AfterPos string `json:"after_position"`
	AfterID  string `json:"after_event_id"`
}

// Verdict returns a *GapError when the audit found a gap (or, with Strict,
// any finding).
func (r *RelayReport) verdict(strict bool) error {
	var what []string
	if r.Missing > 0 {
		what = append(what, fmt.Sprintf("%d outbox rows missing from the stream", r.Missing))
	}
	if strict && r.StoredTwice > 0 {
		what = append(what, fmt.Sprintf("%d rows stored twice", r.StoredTwice))
	}
	if strict && r.OutOfOrder > 0 {
		what = append(what, fmt.Sprintf("%d messages out of commit order", r.OutOfOrder))
	}
	if len(what) == 0 {
		return nil
	}
	return &GapError{What: strings.Join(what, ", ")}
}

// orderCheck follows source positions in stream order: O(1) state.
type orderCheck struct {
	prev    Message
	hasPrev bool
	breaks  int64
	first   []OrderBreak
	limit   int
}

func (c *orderCheck) see(m *Message) {
	if !m.HasPos {
		return // backfilled rows and the gem's messages carry no position
	}
	if c.hasPrev && m.Pos.Compare(c.prev.Pos) < 0 {
		c.breaks++
		if len(c.first) < c.limit {
			c.first = append(c.first, OrderBreak{Seq: m.Seq, EventID: m.MsgID, Position: m.Pos.String(),
				AfterSeq: c.prev.Seq, AfterPos: c.prev.Pos.String(), AfterID: c.prev.MsgID})
		}
		return // the high-water mark stays: each later message is compared to it
	}
	c.prev, c.hasPrev = *m, true
}

// AuditRelay compares the outbox rows of conn's database with the stream.
// conn must not be in a transaction; the audit opens its own (read only,
// REPEATABLE READ) and leaves nothing behind.
func AuditRelay(ctx context.Context, conn *pgx.Conn, js jetstream.JetStream, o RelayOptions) (*RelayReport, error) {
	o.defaults()
	rep := &RelayReport{Since: sinceText(o.Since), Stream: o.Stream, Subjects: o.Subjects, OutboxTable: o.OutboxTable}
	// The snapshot fixes the rows audited before the stream is read, so a row
	// is only judged against a stream that had the chance to receive it.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return nil, fmt.Errorf("begin audit transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE bridge_audit_stream (event_id uuid NOT NULL, seq bigint NOT NULL, dead bool NOT NULL) ON COMMIT DROP`); err != nil {
		return nil, fmt.Errorf("create audit table: %w", err)
	}
	var since any
	if !o.Since.IsZero() {
		since = o.Since
	}
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+o.OutboxTable+` WHERE $1::timestamptz IS NULL OR occurred_at >= $1`, since).Scan(&rep.Rows); err != nil {
		return nil, fmt.Errorf("count outbox rows: %w", err)
	}
	order := orderCheck{limit: o.Limit}
	load := func(page []Message) error {
		rows := make([][]any, 0, len(page))
		for i := range page {
			m := &page[i]
			rep.Messages++
			dead := m.Subject == o.DLQ
			id := m.MsgID
			if dead {
				id = strings.TrimPrefix(id, envelope.DLQPrefix)
			} else {
				order.see(m)
			}
			u, ok := parseUUID(id)
			if !ok {
				continue // not an outbox event id: nothing of this outbox
			}
			rows = append(rows, []any{u, int64(m.Seq), dead})
		}
		if len(rows) == 0 {
			return nil
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"bridge_audit_stream"}, []string{"event_id", "seq", "dead"}, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("copy stream page: %w", err)
		}
		return nil
	}
	from := o.Since
	if !from.IsZero() {
		from = from.Add(-o.Margin)
	}
	last, err := scan(ctx, js, scanRange{stream: o.Stream, subjects: o.Subjects, from: from, page: o.Page}, load)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `CREATE INDEX ON bridge_audit_stream (event_id); ANALYZE bridge_audit_stream`); err != nil {
		return nil, fmt.Errorf("index audit table: %w", err)
	}
	if err := relayCounts(ctx, tx, o, since, rep); err != nil {
		return nil, err
	}
	if rep.Missing > 0 && o.Settle > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(o.Settle):
		}
		if _, err := scan(ctx, js, scanRange{stream: o.Stream, subjects: o.Subjects, afterSeq: last, page: o.Page}, load); err != nil {
			return nil, err
		}
		if err := relayCounts(ctx, tx, o, since, rep); err != nil {
			return nil, err
		}
		rep.Rechecked = true
	}
	rep.OutOfOrder, rep.OutOfOrderAt = order.breaks, order.first
	if err := relayExamples(ctx, tx, o, since, rep); err != nil {
		return nil, err
	}
	return rep, rep.verdict(o.Strict)
}

func relayCounts(ctx context.Context, tx pgx.Tx, o RelayOptions, since any, rep *RelayReport) error {
	err := tx.QueryRow(ctx, `
		WITH s AS (SELECT event_id, count(*) FILTER (WHERE NOT dead) AS pub, count(*) FILTER (WHERE dead) AS dead
			FROM bridge_audit_stream GROUP BY event_id)
		SELECT count(*) FILTER (WHERE s.pub > 0),
			count(*) FILTER (WHERE s.pub = 0 AND s.dead > 0),
			count(*) FILTER (WHERE s.event_id IS NULL),
			count(*) FILTER (WHERE s.pub > 1)
		FROM `+o.OutboxTable+` o LEFT JOIN s USING (event_id)
		WHERE $1::timestamptz IS NULL OR o.occurred_at >= $1`, since).
		Scan(&rep.Published, &rep.DeadLettered, &rep.Missing, &rep.StoredTwice)
	if err != nil {
		return fmt.Errorf("compare outbox with stream: %w", err)
	}
	return nil
}

func relayExamples(ctx context.Context, tx pgx.Tx, o RelayOptions, since any, rep *RelayReport) error {
	if o.Limit == 0 {
		return nil
	}
	window := `($1::timestamptz IS NULL OR o.occurred_at >= $1)`
	var err error
	if rep.Missing > 0 {
		rep.MissingIDs, err = strings1(ctx, tx, `SELECT o.event_id::text FROM `+o.OutboxTable+` o WHERE `+window+`
			AND NOT EXISTS (SELECT 1 FROM bridge_audit_stream s WHERE s.event_id = o.event_id) ORDER BY o.id LIMIT $2`, since, o.Limit)
		if err != nil {
			return fmt.Errorf("list missing rows: %w", err)
		}
	}
	if rep.DeadLettered > 0 {
		rep.DeadLetteredIDs, err = strings1(ctx, tx, `SELECT o.event_id::text FROM `+o.OutboxTable+` o WHERE `+window+`
			AND EXISTS (SELECT 1 FROM bridge_audit_stream s WHERE s.event_id = o.event_id AND s.dead)
			AND NOT EXISTS (SELECT 1 FROM bridge_audit_stream s WHERE s.event_id = o.event_id AND NOT s.dead)
			ORDER BY o.id LIMIT $2`, since, o.Limit)
		if err != nil {
			return fmt.Errorf("list dead-lettered rows: %w", err)
		}
	}
	if rep.StoredTwice > 0 {
		rows, err := tx.Query(ctx, `SELECT s.event_id::text, array_agg(s.seq ORDER BY s.seq)
			FROM bridge_audit_stream s JOIN `+o.OutboxTable+` o USING (event_id)
			WHERE NOT s.dead AND `+window+`
			GROUP BY s.event_id HAVING count(*) > 1 ORDER BY min(s.seq) LIMIT $2`, since, o.Limit)
		if err != nil {
			return fmt.Errorf("list duplicates: %w", err)
		}
		for rows.Next() {
			var d Duplicate
			var seqs []int64
			if err := rows.Scan(&d.EventID, &seqs); err != nil {
				rows.Close()
				return fmt.Errorf("list duplicates: %w", err)
			}
			for _, s := range seqs {
				d.Seqs = append(d.Seqs, uint64(s))
			}
			rep.StoredTwiceIDs = append(rep.StoredTwiceIDs, d)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list duplicates: %w", err)
		}
	}
	return nil
}

// strings1 runs a query returning one text column.
func strings1(ctx context.Context, tx pgx.Tx, sql string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// parseUUID reads the canonical 36-character form; outbox event ids are
// uuids, so anything else is another producer's message.
func parseUUID(s string) (pgtype.UUID, bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return pgtype.UUID{}, false
	}
	var u pgtype.UUID
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(u.Bytes[:], []byte(h)); err != nil {
		return pgtype.UUID{}, false
	}
	u.Valid = true
	return u, true
}

func sinceText(t time.Time) string {
	if t.IsZero() {
		return "all"
	}
	return t.UTC().Format(time.RFC3339)
}
