// Package migrations holds the SQL schema of JetStream Bridge and renders it
// under the configured names; internal/provision applies it.
//
// The .sql files are plain and idempotent so operators can review them and run
// them by hand (psql -f) with admin credentials; the binaries apply the same
// files on `provision` and at start when AUTO_PROVISION=true. Names are written with their
// defaults and rewritten when the configuration names other tables.
package migrations

import (
	"embed"
	"fmt"
	"strings"
)

//go:embed *.sql
var files embed.FS

const (
	DefaultOutbox      = "public.jetstream_outbox_events"
	DefaultInbox       = "public.jetstream_inbox_events"
	DefaultPublication = "jetstream_bridge_outbox"
	defaultSlots       = "public.jetstream_bridge_slots"
	defaultPositions   = DefaultInbox + "_positions"
)

// Names are the configured object names; empty means the default.
type Names struct {
	Outbox      string // schema.table
	Inbox       string // schema.table
	Publication string
}

// Outbox returns the outbox schema: table, publication and jetstream_publish.
func Outbox(n Names) (string, error) { return render("001_outbox.sql", n) }

// Inbox returns the inbox schema: inbox table and per-key positions.
func Inbox(n Names) (string, error) { return render("002_inbox.sql", n) }

// Partitions returns the schema of partitioned sinks: the ownership and
// member tables, in the inbox table's schema.
func Partitions(n Names) (string, error) {
	b, err := files.ReadFile("003_partitions.sql")
	if err != nil {
		return "", err
	}
	part, members, err := PartitionTables(n.Inbox)
	if err != nil {
		return "", err
	}
	sql := strings.ReplaceAll(string(b), "public.jetstream_bridge_partitions", part)
	return strings.ReplaceAll(sql, "public.jetstream_bridge_members", members), nil
}

// PartitionTables returns the quoted names of the ownership and member
// tables for the inbox table inbox ("" = the default).
func PartitionTables(inbox string) (partitions, members string, err error) {
	if inbox == "" {
		inbox = DefaultInbox
	}
	if _, err := QuoteQualified(inbox); err != nil {
		return "", "", fmt.Errorf("INBOX_TABLE: %w", err)
	}
	schema, _ := SplitQualified(inbox)
	return `"` + schema + `"."jetstream_bridge_partitions"`, `"` + schema + `"."jetstream_bridge_members"`, nil
}

func render(file string, n Names) (string, error) {
	b, err := files.ReadFile(file)
	if err != nil {
		return "", err
	}
	sql := string(b)
	if n.Inbox != "" && n.Inbox != DefaultInbox {
		tbl, err := QuoteQualified(n.Inbox)
		if err != nil {
			return "", fmt.Errorf("INBOX_TABLE: %w", err)
		}
		pos, _ := QuoteQualified(n.Inbox + "_positions")
		sql = strings.ReplaceAll(sql, defaultPositions, pos)
		sql = strings.ReplaceAll(sql, DefaultInbox, tbl)
		_, name, _ := strings.Cut(n.Inbox, ".")
		sql = strings.ReplaceAll(sql, "jetstream_inbox_events_", name+"_")
	}
	if n.Outbox != "" && n.Outbox != DefaultOutbox {
		tbl, err := QuoteQualified(n.Outbox)
		if err != nil {
			return "", fmt.Errorf("OUTBOX_TABLE: %w", err)
		}
		sql = strings.ReplaceAll(sql, DefaultOutbox, tbl)
		slots, _ := QuoteQualified(SlotsTable(n.Outbox))
		sql = strings.ReplaceAll(sql, defaultSlots, slots)
	}
	if n.Publication != "" && n.Publication != DefaultPublication {
		if err := ValidIdent(n.Publication); err != nil {
			return "", fmt.Errorf("PUBLICATION: %w", err)
		}
		sql = strings.ReplaceAll(sql, DefaultPublication, n.Publication)
	}
	return sql, nil
}

// ValidIdent accepts plain lowercase SQL identifiers: a letter or underscore,
// then letters, digits or underscores, at most 63 bytes. Anything else is
// refused rather than quoted, so a configured name can never carry SQL.
func ValidIdent(s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("%q is not a valid identifier (1-63 characters)", s)
	}
	for i, r := range s {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("%q is not a valid identifier: use lowercase letters, digits and _", s)
		}
	}
	return nil
}

// QuoteQualified validates "schema.name" (or "name", meaning public.name) and
// returns it double-quoted.
func QuoteQualified(s string) (string, error) {
	schema, name, ok := strings.Cut(s, ".")
	if !ok {
		schema, name = "public", s
	}
	if err := ValidIdent(schema); err != nil {
		return "", err
	}
	if err := ValidIdent(name); err != nil {
		return "", err
	}
	return `"` + schema + `"."` + name + `"`, nil
}

// SlotsTable is the relay's slot record table (schema.name): in the
// outbox's schema.
func SlotsTable(outbox string) string {
	schema, _ := SplitQualified(outbox)
	return schema + ".jetstream_bridge_slots"
}

// SplitQualified returns the schema and name of a validated "schema.name".
func SplitQualified(s string) (schema, name string) {
	schema, name, ok := strings.Cut(s, ".")
	if !ok {
		return "public", s
	}
	return schema, name
}
