package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
)

// baseline is where the tables stood when the demo started writing; counts
// are taken past it, so a reused database (--db-a/--db-b) counts this run only.
type baseline struct {
	outboxID, inboxID int64
}

func readBaseline(ctx context.Context, db *pgxpool.Pool) (baseline, error) {
	var b baseline
	err := db.QueryRow(ctx, `SELECT (SELECT coalesce(max(id), 0) FROM public.jetstream_outbox_events),
		(SELECT coalesce(max(id), 0) FROM public.jetstream_inbox_events)`).Scan(&b.outboxID, &b.inboxID)
	if err != nil {
		return b, fmt.Errorf("read baseline: %w", err)
	}
	return b, nil
}

// sideStats is one database's view since the baseline.
type sideStats struct {
	outbox  int64 // outbox rows: events this side published
	applied int64 // inbox rows processed: events from the other side applied here
	failed  int64 // inbox rows waiting for a retry
	dead    int64 // inbox rows dead-lettered
	latency latency
}

// latency of write -> applied on the other side: the inbox row's processed_at
// minus the updated_at the writer gave the row (one clock when both databases
// share a cluster).
type latency struct {
	n             int64
	p50, p99, max time.Duration
}

func (l latency) String() string {
	if l.n == 0 {
		return "-"
	}
	return fmt.Sprintf("%s / %s", ms(l.p50), ms(l.p99))
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.0fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// readStats counts outbox and inbox rows past b; latency covers the events
// applied in the last window (0 = all of them).
func readStats(ctx context.Context, db *pgxpool.Pool, b baseline, window time.Duration) (sideStats, error) {
	var s sideStats
	secs := window.Seconds()
	if window <= 0 {
		secs = 1e9
	}
	var p50, p99, pmax *float64
	err := db.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM public.jetstream_outbox_events WHERE id > $1),
		       count(*) FILTER (WHERE status = 'processed'),
		       count(*) FILTER (WHERE status = 'failed'),
		       count(*) FILTER (WHERE status = 'dead'),
		       count(lat) FILTER (WHERE recent),
		       percentile_cont(0.5) WITHIN GROUP (ORDER BY lat) FILTER (WHERE recent),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) FILTER (WHERE recent),
		       max(lat) FILTER (WHERE recent)
		FROM (SELECT status,
		             status = 'processed' AND processed_at > now() - make_interval(secs => $3) AS recent,
		             extract(epoch FROM processed_at - (payload ->> 'updated_at')::timestamptz)::float8 AS lat
		      FROM public.jetstream_inbox_events
		      WHERE id > $2 AND resource_type IN ('organization', 'user')) x`,
		b.outboxID, b.inboxID, secs).Scan(&s.outbox, &s.applied, &s.failed, &s.dead, &s.latency.n, &p50, &p99, &pmax)
	if err != nil {
		return s, fmt.Errorf("read sync counts: %w", err)
	}
	seconds := func(f *float64) time.Duration {
		if f == nil {
			return 0
		}
		return time.Duration(max(*f, 0) * float64(time.Second))
	}
	s.latency.p50, s.latency.p99, s.latency.max = seconds(p50), seconds(p99), seconds(pmax)
	return s, nil
}

// countApplied returns how many events were applied (or dead-lettered) here
// since the baseline: the cheap part of readStats.
func countApplied(ctx context.Context, db *pgxpool.Pool, b baseline) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT count(*) FROM public.jetstream_inbox_events
		WHERE id > $1 AND status IN ('processed', 'dead') AND resource_type IN ('organization', 'user')`, b.inboxID).Scan(&n)
	return n, err
}

// tableDiff compares one table between the two databases.
type tableDiff struct {
	table        string
	rowsA, rowsB int
	onlyA, onlyB int
	differ       int
	examples     []string
}

func (t tableDiff) equal() bool { return t.onlyA == 0 && t.onlyB == 0 && t.differ == 0 }

// compareTables reads every row of demo.organizations and demo.users from
// both sides, rendered without depending on the session time zone, and
// compares them by id.
func compareTables(ctx context.Context, a, b *pgxpool.Pool) ([]tableDiff, error) {
	const ts = `to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`
	queries := []struct{ table, sql string }{
		{"organizations", `SELECT id::text, concat_ws(' | ', name, domain, active, ` + ts + `) FROM demo.organizations`},
		{"users", `SELECT id::text, concat_ws(' | ', organization_id, name, email, role, active, ` + ts + `) FROM demo.users`},
	}
	var out []tableDiff
	for _, q := range queries {
		ra, err := readRows(ctx, a, q.sql)
		if err != nil {
			return nil, fmt.Errorf("read %s on system_a: %w", q.table, err)
		}
		rb, err := readRows(ctx, b, q.sql)
		if err != nil {
			return nil, fmt.Errorf("read %s on system_b: %w", q.table, err)
		}
		d := tableDiff{table: q.table, rowsA: len(ra), rowsB: len(rb)}
		ids := make([]string, 0, len(ra))
		for id := range ra {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			vb, ok := rb[id]
			switch {
			case !ok:
				d.onlyA++
				d.example("only on system_a: " + id + " " + ra[id])
			case vb != ra[id]:
				d.differ++
				d.example("differs " + id + ":\n        system_a " + ra[id] + "\n        system_b " + vb)
			}
		}
		for id, v := range rb {
			if _, ok := ra[id]; !ok {
				d.onlyB++
				d.example("only on system_b: " + id + " " + v)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

func (t *tableDiff) example(s string) {
	if len(t.examples) < 3 {
		t.examples = append(t.examples, s)
	}
}

func readRows(ctx context.Context, db *pgxpool.Pool, sql string) (map[string]string, error) {
	rows, err := db.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var id, v string
		if err := rows.Scan(&id, &v); err != nil {
			return nil, err
		}
		m[id] = v
	}
	return m, rows.Err()
}

// subjectCounts returns the number of stored messages per subject of the
// stream, or nil when the stream cannot be read.
func subjectCounts(ctx context.Context, js jetstream.JetStream, stream string) (map[string]uint64, error) {
	if js == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", stream, err)
	}
	return info.State.Subjects, nil
}

// padRight pads s with spaces to n runes.
func padRight(s string, n int) string {
	if l := len([]rune(s)); l < n {
		return s + strings.Repeat(" ", n-l)
	}
	return s
}
