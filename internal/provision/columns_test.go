package provision_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// TestCheckTableOnGemTablesThenProvisioned: the gem's inbox and outbox, as
// its migrations create them, are reported with what they lack and the
// statements that fix it; provisioning applies them, after which nothing
// is reported and provisioning again has nothing to add. Our own tables
// need nothing.
func TestCheckTableOnGemTablesThenProvisioned(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := testutil.NewDatabase(t)
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, testutil.GemInboxDDL+testutil.GemOutboxDDL); err != nil {
		t.Fatal(err)
	}
	names := migrations.Names{Inbox: "public.jetstream_bridge_inbox_events", Outbox: "public.jetstream_bridge_outbox_events",
		Publication: "gem_outbox"}

	in, err := provision.CheckTable(ctx, conn, provision.InboxTable, names.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in.Missing, []string{"commit_lsn", "tx_index"}) ||
		!slices.Equal(in.Blocking, []string{"created_at", "event_type", "payload", "updated_at"}) || len(in.Unfixable) != 0 {
		t.Fatalf("gem inbox: missing %v, blocking %v, unfixable %v", in.Missing, in.Blocking, in.Unfixable)
	}
	if err := in.Err("sink provision"); err == nil || !strings.Contains(err.Error(), "lacks columns commit_lsn, tx_index") ||
		!strings.Contains(err.Error(), "sink provision --print-sql") {
		t.Fatalf("gem inbox error: %v", err)
	}
	out, err := provision.CheckTable(ctx, conn, provision.OutboxTable, names.Outbox)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Missing, []string{"event_type"}) || out.Err("relay provision") == nil || out.Warning() == "" {
		t.Fatalf("gem outbox: missing %v, optional %v, blocking %v", out.Missing, out.Optional, out.Blocking)
	}

	if err := provision.Inbox(ctx, db, names); err != nil {
		t.Fatal(err)
	}
	if err := provision.Outbox(ctx, db, names); err != nil {
		t.Fatal(err)
	}
	// Our own tables, as the migrations create them.
	if err := provision.Inbox(ctx, db, migrations.Names{}); err != nil {
		t.Fatal(err)
	}
	if err := provision.Outbox(ctx, db, migrations.Names{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ kind, table string }{
		{provision.InboxTable, names.Inbox}, {provision.OutboxTable, names.Outbox},
		{provision.InboxTable, migrations.DefaultInbox}, {provision.OutboxTable, migrations.DefaultOutbox},
	} {
		r, err := provision.CheckTable(ctx, conn, c.kind, c.table)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Err("provision"); err != nil || len(r.Upgrade) != 0 || r.Warning() != "" {
			t.Fatalf("%s after provisioning: %v, upgrade %v, warning %q", c.table, err, r.Upgrade, r.Warning())
		}
	}
	if sql, err := provision.InboxSQL(ctx, conn, names); err != nil || len(sql) != 1 {
		t.Fatalf("provisioning the gem's inbox again: %v, %d statements, want the schema alone", err, len(sql))
	}
}
