package provision

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// A table the bridge did not create (the Ruby gem's
// jetstream_bridge_outbox_events or jetstream_bridge_inbox_events, or an
// app's own) may lack columns the bridge reads or writes, or hold NOT NULL
// columns the bridge never fills. Found at start, either would fail every
// event, one at a time; so the relay and the sink check the table first
// (CheckTable) and refuse to start, and provisioning brings the table up to
// what the bridge needs (Upgrade) with statements a team can review
// (`provision --print-sql`) before they run: columns are added, never
// dropped or retyped, and existing rows keep their values.

// column is one column the bridge needs: how to add it, whether the
// process cannot run without it, whether the bridge may write NULL to it,
// and whether the bridge writes it at all.
type column struct {
	name     string
	add      string // type and default for ADD COLUMN
	required bool   // start is refused without it
	nullable bool   // the bridge may write NULL
	written  bool   // the bridge's inserts name it
}

// outboxColumns: the relay reads every column; event_id, event_type and
// payload it cannot do without. jetstream_publish writes all but event_id
// (its default), and may write NULL to the optional ones.
var outboxColumns = []column{
	{name: "event_id", add: "uuid NOT NULL DEFAULT gen_random_uuid()", required: true},
	{name: "resource_type", add: "text", written: true},
	{name: "resource_id", add: "text", nullable: true, written: true},
	{name: "event_type", add: "text", required: true, written: true},
	{name: "payload", add: "jsonb NOT NULL DEFAULT '{}'", required: true, written: true},
	{name: "headers", add: "jsonb NOT NULL DEFAULT '{}'", written: true},
	{name: "subject", add: "text", nullable: true, written: true},
	{name: "destination", add: "text", nullable: true, written: true},
	{name: "trace_id", add: "text", nullable: true, written: true},
	{name: "occurred_at", add: "timestamptz NOT NULL DEFAULT now()", written: true},
}

// inboxColumns: the sink writes every one of them but received_at and
// created_at; a poison message's row may lack any envelope field.
var inboxColumns = []column{
	{name: "event_id", add: "text", required: true, written: true},
	{name: "event_type", add: "text", required: true, nullable: true, written: true},
	{name: "resource_type", add: "text", required: true, nullable: true, written: true},
	{name: "resource_id", add: "text", required: true, nullable: true, written: true},
	{name: "payload", add: "jsonb", required: true, nullable: true, written: true},
	{name: "subject", add: "text", required: true, nullable: true, written: true},
	{name: "headers", add: "jsonb", required: true, nullable: true, written: true},
	{name: "stream", add: "text", required: true, nullable: true, written: true},
	{name: "stream_seq", add: "bigint", required: true, nullable: true, written: true},
	{name: "deliveries", add: "integer NOT NULL DEFAULT 0", required: true, written: true},
	{name: "status", add: "text NOT NULL DEFAULT 'received'", required: true, written: true},
	{name: "error_message", add: "text", required: true, nullable: true, written: true},
	{name: "processing_attempts", add: "integer NOT NULL DEFAULT 0", required: true, written: true},
	{name: "commit_lsn", add: "pg_lsn", required: true, nullable: true, written: true},
	{name: "tx_index", add: "integer", required: true, nullable: true, written: true},
	{name: "received_at", add: "timestamptz NOT NULL DEFAULT now()"},
	{name: "processed_at", add: "timestamptz", required: true, nullable: true, written: true},
	{name: "failed_at", add: "timestamptz", required: true, nullable: true, written: true},
	{name: "created_at", add: "timestamptz NOT NULL DEFAULT now()"},
	{name: "updated_at", add: "timestamptz NOT NULL DEFAULT now()", required: true},
}

// Table kinds for CheckTable and Upgrade.
const (
	OutboxTable = "outbox"
	InboxTable  = "inbox"
)

// TableReport is what a table lacks for the bridge.
type TableReport struct {
	Kind     string // OutboxTable or InboxTable
	Table    string // as configured, schema.table
	Exists   bool
	Missing  []string // columns the process cannot run without
	Optional []string // other columns it lacks
	// Blocking are NOT NULL columns without a default that the bridge
	// leaves empty (or may write NULL to): every insert would fail.
	Blocking []string
	// Upgrade are the statements that fix all of the above.
	Upgrade []string
	// Unfixable are blocking columns no statement here can fix (a NOT
	// NULL column the bridge knows nothing about, of a type without an
	// obvious default).
	Unfixable []string
}

// existingColumn is a column as information_schema describes it.
type existingColumn struct {
	dataType   string
	notNull    bool
	hasDefault bool
}

// Querier is a connection or a pool.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// CheckTable reads table's columns (information_schema) and reports what
// the relay (kind OutboxTable) or the sink (InboxTable) needs there.
func CheckTable(ctx context.Context, conn Querier, kind, table string) (*TableReport, error) {
	schema, name := migrations.SplitQualified(table)
	rows, err := conn.Query(ctx, `SELECT column_name, data_type, is_nullable = 'NO', column_default IS NOT NULL OR is_identity = 'YES'
		FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2`, schema, name)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table, err)
	}
	have := map[string]existingColumn{}
	for rows.Next() {
		var n string
		var c existingColumn
		if err := rows.Scan(&n, &c.dataType, &c.notNull, &c.hasDefault); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read columns of %s: %w", table, err)
		}
		have[n] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", table, err)
	}
	return judge(kind, table, have), nil
}

func judge(kind, table string, have map[string]existingColumn) *TableReport {
	r := &TableReport{Kind: kind, Table: table, Exists: len(have) > 0}
	if !r.Exists {
		return r
	}
	quoted, _ := migrations.QuoteQualified(table)
	need := outboxColumns
	if kind == InboxTable {
		need = inboxColumns
	}
	for _, c := range need {
		if _, ok := have[c.name]; ok {
			continue
		}
		if c.required {
			r.Missing = append(r.Missing, c.name)
		} else {
			r.Optional = append(r.Optional, c.name)
		}
		r.Upgrade = append(r.Upgrade, fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s", quoted, c.name, c.add))
	}
	names := make([]string, 0, len(have))
	for n := range have {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		e := have[n]
		if !e.notNull || e.hasDefault {
			continue
		}
		i := slices.IndexFunc(need, func(c column) bool { return c.name == n })
		var fix string
		switch {
		case i >= 0 && need[i].written && need[i].nullable:
			fix = "DROP NOT NULL"
		case i >= 0 && need[i].written:
			continue // always written with a value
		case strings.HasPrefix(e.dataType, "timestamp"):
			fix = "SET DEFAULT now()"
		case kind == OutboxTable && n == "event_id":
			fix = "SET DEFAULT gen_random_uuid()"
			if e.dataType != "uuid" {
				fix = "SET DEFAULT gen_random_uuid()::text"
			}
		default:
			r.Unfixable = append(r.Unfixable, n)
			continue
		}
		r.Blocking = append(r.Blocking, n)
		r.Upgrade = append(r.Upgrade, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s %s", quoted, n, fix))
	}
	return r
}

// Err is the error a process refuses to start with when the table lacks
// what it cannot do without, naming the columns and the fix; nil when the
// table will do. command is the provisioning command (`sink provision`).
// Blocking columns stop the sink, which inserts into its inbox; in an
// outbox they only stop the apps' inserts (see Warning).
func (r *TableReport) Err(command string) error {
	if !r.Exists {
		return fmt.Errorf("table %s does not exist; run `%s` (or review first with `%s --print-sql`)", r.Table, command, command)
	}
	var what []string
	if len(r.Missing) > 0 {
		what = append(what, "lacks columns "+strings.Join(r.Missing, ", "))
	}
	if len(r.Blocking) > 0 && r.Kind == InboxTable {
		what = append(what, "has NOT NULL columns without a default that the bridge leaves empty: "+strings.Join(r.Blocking, ", "))
	}
	if len(r.Unfixable) > 0 && r.Kind == InboxTable {
		what = append(what, "has NOT NULL columns without a default the bridge knows nothing about ("+
			strings.Join(r.Unfixable, ", ")+"): give them a default or drop NOT NULL")
	}
	if len(what) == 0 {
		return nil
	}
	fix := ""
	if len(r.Upgrade) > 0 {
		fix = fmt.Sprintf("; run `%s` to add what is missing (review the SQL first with `%s --print-sql`):\n  %s",
			command, command, strings.Join(r.Upgrade, ";\n  ")+";")
	}
	return fmt.Errorf("table %s %s%s", r.Table, strings.Join(what, "; "), fix)
}

// Warning describes what an outbox lacks that does not stop the relay
// (optional columns; NOT NULL columns jetstream_publish would leave empty),
// "" when nothing.
func (r *TableReport) Warning() string {
	if r.Kind != OutboxTable || !r.Exists {
		return ""
	}
	var what []string
	if len(r.Optional) > 0 {
		what = append(what, "lacks optional columns "+strings.Join(r.Optional, ", ")+" (relayed as empty)")
	}
	if b := append(slices.Clone(r.Blocking), r.Unfixable...); len(b) > 0 {
		what = append(what, "has NOT NULL columns without a default that jetstream_publish leaves empty ("+
			strings.Join(b, ", ")+"): its inserts fail")
	}
	return strings.Join(what, "; ")
}
