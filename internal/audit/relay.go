package audit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// RelayOptions say what the relay audit compares.
type RelayOptions struct {
	Window
	Stream      string            // JetStream stream name
	OutboxTable string            // quoted schema.table
	Subjects    envelope.Subjects // the relay's subject builder (ENV_NAME, APP_NAME)
}

// RelayReport is the result of Relay.
type RelayReport struct {
	Since    *time.Time `json:"since"` // nil: all
	Until    time.Time  `json:"until"` // rows younger than this were left out (settle)
	Stream   string     `json:"stream"`
	Subjects []string   `json:"subjects"`
	Messages int64      `json:"messages_read"`

	Rows         int64            `json:"rows"`          // outbox rows in the window
	Published    int64            `json:"published"`     // rows with a message on a publish subject
	DeadLettered int64            `json:"dead_lettered"` // rows only on the DLQ subject (the relay dead-lettered them)
	Missing      int64            `json:"missing"`       // rows with no message at all
	MissingIDs   []string         `json:"missing_ids,omitempty"`
	StoredTwice  int64            `json:"stored_twice"` // events stored more than once
	Duplicates   []Duplicate      `json:"stored_twice_examples,omitempty"`
	OutOfOrder   int64            `json:"out_of_order"` // messages behind an earlier one's position
	Violations   []OrderViolation `json:"out_of_order_examples,omitempty"`
}

// Duplicate is an event stored under several stream sequences.
type Duplicate struct {
	IDs  []string `json:"ids"` // the Nats-Msg-Id of each copy
	Seqs []uint64 `json:"seqs"`
}

// OrderViolation is a message stored after one with a later commit position.
type OrderViolation struct {
	Seq      uint64 `json:"seq"`
	ID       string `json:"id"`
	Position string `json:"position"` // commit LSN/index of the message
	After    string `json:"after"`    // the highest position stored before it
}

// Gap reports whether the audit found something that breaks a guarantee:
// a committed row that is not in the stream, or events out of commit order.
// Copies stored twice are reported but are no gap: every inbox drops them.
func (r *RelayReport) Gap() error {
	if r.Missing == 0 && r.OutOfOrder == 0 {
		return nil
	}
	return fmt.Errorf("%d rows missing from the stream, %d messages out of commit order", r.Missing, r.OutOfOrder)
}

// Relay compares the outbox rows committed in the window with the messages
// of the relay's subjects in the stream. conn is a session of its own: the
// audit creates a temporary table in it.
func Relay(ctx context.Context, conn *pgx.Conn, js jetstream.JetStream, o RelayOptions) (*RelayReport, error) {
	var now time.Time
	if err := conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		return nil, fmt.Errorf("read database time: %w", err)
	}
	rep := &RelayReport{Until: now.Add(-o.Settle).UTC(), Stream: o.Stream}
	if !o.Since.IsZero() {
		t := o.Since.UTC()
		rep.Since = &t
	}
	// All of this producer's subjects: every destination and the DLQ are
	// under [{env}.]{app}.sync.>; rows with a subject of their own add theirs.
	producer := strings.TrimSuffix(o.Subjects.DLQ(), "dlq") + ">"
	rep.Subjects = []string{producer}
	rows, err := conn.Query(ctx, `SELECT DISTINCT subject FROM `+o.OutboxTable+`
		WHERE subject <> '' AND occurred_at >= $1 AND occurred_at < $2 ORDER BY 1`, o.Since, rep.Until)
	if err != nil {
		return nil, fmt.Errorf("read outbox subjects: %w", err)
	}
	custom, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read outbox subjects: %w", err)
	}
	for _, s := range custom {
		// A subject that is no valid publish subject was dead-lettered by
		// the relay (it is on the DLQ subject) and cannot be a filter.
		if !covers(producer, s) && envelope.ValidatePublishSubject(s) == nil {
			rep.Subjects = append(rep.Subjects, s)
		}
	}

	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS audit_relay_msgs (
		seq bigint NOT NULL, msg_id text NOT NULL, dlq boolean NOT NULL,
		lsn bigint, idx int, behind boolean NOT NULL, max_lsn bigint, max_idx int);
		TRUNCATE audit_relay_msgs`); err != nil {
		return nil, fmt.Errorf("create temporary table: %w", err)
	}
	dlqSubject := o.Subjects.DLQ()
	var maxLSN uint64
	maxIdx, seen := 0, false
	rowsBuf := make([][]any, 0, o.page())
	from := o.Since
	if !from.IsZero() {
		from = from.Add(-o.Margin)
	}
	err = readStream(ctx, js, o.Stream, rep.Subjects, from, o.page(), func(page []message) error {
		rowsBuf = rowsBuf[:0]
		for i := range page {
			m := &page[i]
			rep.Messages++
			id := msgID(m.Header)
			dlq := m.Subject == dlqSubject
			if dlq {
				// The DLQ subject also holds the app's sink dead letters,
				// which carry another producer's events and positions.
				if m.Header.Get(envelope.HeaderErrorClass) != envelope.ClassRelay {
					continue
				}
				id = strings.TrimPrefix(id, envelope.DLQPrefix)
			}
			row := []any{int64(m.Seq), id, dlq, nil, nil, false, nil, nil}
			// Dead letters are left out of the order check: a row refused
			// for good may be dead-lettered after the rows behind it were
			// published (NO_STREAM_TIMEOUT), and no sink applies it.
			if pos, ok := envelope.ParsePosition(m.Header); ok && !dlq {
				l := uint64(pos.CommitLSN)
				row[3], row[4] = int64(l), pos.TxIndex
				if seen && (l < maxLSN || l == maxLSN && pos.TxIndex < maxIdx) {
					row[5], row[6], row[7] = true, int64(maxLSN), maxIdx
				} else {
					maxLSN, maxIdx, seen = l, pos.TxIndex, true
				}
			}
			rowsBuf = append(rowsBuf, row)
		}
		_, err := conn.CopyFrom(ctx, pgx.Identifier{"audit_relay_msgs"},
			[]string{"seq", "msg_id", "dlq", "lsn", "idx", "behind", "max_lsn", "max_idx"}, pgx.CopyFromRows(rowsBuf))
		if err != nil {
			return fmt.Errorf("copy stream page: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `CREATE INDEX IF NOT EXISTS audit_relay_msgs_id ON audit_relay_msgs (msg_id);
		CREATE INDEX IF NOT EXISTS audit_relay_msgs_pos ON audit_relay_msgs (lsn, idx); ANALYZE audit_relay_msgs`); err != nil {
		return nil, fmt.Errorf("index temporary table: %w", err)
	}
	if err := rep.compare(ctx, conn, o); err != nil {
		return nil, err
	}
	return rep, nil
}

// compare runs the anti-joins between the outbox window and the copied
// messages.
func (rep *RelayReport) compare(ctx context.Context, conn *pgx.Conn, o RelayOptions) error {
	window := `FROM ` + o.OutboxTable + ` o WHERE o.occurred_at >= $1 AND o.occurred_at < $2`
	err := conn.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE pub),
		count(*) FILTER (WHERE NOT pub AND dead),
		count(*) FILTER (WHERE NOT pub AND NOT dead)
		FROM (SELECT EXISTS (SELECT 1 FROM audit_relay_msgs m WHERE m.msg_id = o.event_id::text AND NOT m.dlq) AS pub,
			EXISTS (SELECT 1 FROM audit_relay_msgs m WHERE m.msg_id = o.event_id::text AND m.dlq) AS dead `+window+`) r`,
		o.Since, rep.Until).Scan(&rep.Rows, &rep.Published, &rep.DeadLettered, &rep.Missing)
	if err != nil {
		return fmt.Errorf("compare outbox with stream: %w", err)
	}
	if rep.Missing > 0 {
		rows, err := conn.Query(ctx, `SELECT o.event_id::text `+window+`
			AND NOT EXISTS (SELECT 1 FROM audit_relay_msgs m WHERE m.msg_id = o.event_id::text)
			ORDER BY o.id LIMIT $3`, o.Since, rep.Until, o.limit())
		if err != nil {
			return fmt.Errorf("list missing rows: %w", err)
		}
		if rep.MissingIDs, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return fmt.Errorf("list missing rows: %w", err)
		}
	}

	// Copies: one id under several sequences (republished after the
	// duplicate window), or one position under several ids.
	dups := `SELECT array_agg(msg_id ORDER BY seq), array_agg(seq ORDER BY seq), min(seq) AS first
		FROM audit_relay_msgs WHERE NOT dlq GROUP BY msg_id HAVING count(*) > 1
		UNION ALL
		SELECT array_agg(msg_id ORDER BY seq), array_agg(seq ORDER BY seq), min(seq)
		FROM audit_relay_msgs WHERE NOT dlq AND lsn IS NOT NULL GROUP BY lsn, idx HAVING count(DISTINCT msg_id) > 1`
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (`+dups+`) d`).Scan(&rep.StoredTwice); err != nil {
		return fmt.Errorf("count copies: %w", err)
	}
	if rep.StoredTwice > 0 {
		rows, err := conn.Query(ctx, `SELECT * FROM (`+dups+`) d ORDER BY first LIMIT $1`, o.limit())
		if err != nil {
			return fmt.Errorf("list copies: %w", err)
		}
		var seqs []int64
		var first int64
		for rows.Next() {
			var d Duplicate
			if err := rows.Scan(&d.IDs, &seqs, &first); err != nil {
				rows.Close()
				return fmt.Errorf("list copies: %w", err)
			}
			for _, s := range seqs {
				d.Seqs = append(d.Seqs, uint64(s))
			}
			rep.Duplicates = append(rep.Duplicates, d)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list copies: %w", err)
		}
	}

	// A message behind the highest position is out of order unless it is a
	// later copy of an earlier message (counted above).
	behind := `FROM audit_relay_msgs m WHERE m.behind AND NOT EXISTS (SELECT 1 FROM audit_relay_msgs e
		WHERE e.seq < m.seq AND (e.msg_id = m.msg_id OR (e.lsn = m.lsn AND e.idx = m.idx)))`
	if err := conn.QueryRow(ctx, `SELECT count(*) `+behind).Scan(&rep.OutOfOrder); err != nil {
		return fmt.Errorf("count out-of-order messages: %w", err)
	}
	if rep.OutOfOrder > 0 {
		rows, err := conn.Query(ctx, `SELECT m.seq, m.msg_id, m.lsn, m.idx, m.max_lsn, m.max_idx `+behind+` ORDER BY m.seq LIMIT $1`, o.limit())
		if err != nil {
			return fmt.Errorf("list out-of-order messages: %w", err)
		}
		for rows.Next() {
			var seq, lsn, maxLSN int64
			var idx, maxIdx int
			var v OrderViolation
			if err := rows.Scan(&seq, &v.ID, &lsn, &idx, &maxLSN, &maxIdx); err != nil {
				rows.Close()
				return fmt.Errorf("list out-of-order messages: %w", err)
			}
			v.Seq = uint64(seq)
			v.Position = position(lsn, idx)
			v.After = position(maxLSN, maxIdx)
			rep.Violations = append(rep.Violations, v)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list out-of-order messages: %w", err)
		}
	}
	return nil
}

func position(lsn int64, idx int) string {
	return pglogrepl.LSN(uint64(lsn)).String() + "#" + strconv.Itoa(idx)
}
