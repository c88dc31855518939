package provision_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// TestOutboxInboxAndSlotAreIdempotent: provisioning twice creates the
// schema objects once and the slot once, reporting only the first creation,
// and the publication exists before the slot.
func TestOutboxInboxAndSlotAreIdempotent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testutil.NewDatabase(t)
	slot := "provision_test_slot"
	for i, wantCreated := range []bool{true, false} {
		if err := provision.Outbox(ctx, url, migrations.Names{}); err != nil {
			t.Fatalf("outbox %d: %v", i, err)
		}
		if err := provision.Inbox(ctx, url, migrations.Names{}); err != nil {
			t.Fatalf("inbox %d: %v", i, err)
		}
		created, err := provision.CreateSlot(ctx, url, slot)
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		if created != wantCreated {
			t.Fatalf("slot %d: created=%v, want %v", i, created, wantCreated)
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var tables, pubs, slots int
	err = conn.QueryRow(ctx, `SELECT
  (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('jetstream_outbox_events', 'jetstream_inbox_events', 'jetstream_inbox_events_positions')),
  (SELECT count(*) FROM pg_publication WHERE pubname = $1),
  (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $2 AND plugin = 'pgoutput')`,
		migrations.DefaultPublication, slot).Scan(&tables, &pubs, &slots)
	if err != nil {
		t.Fatal(err)
	}
	if tables != 3 || pubs != 1 || slots != 1 {
		t.Fatalf("tables=%d publications=%d slots=%d, want 3, 1, 1", tables, pubs, slots)
	}
}
