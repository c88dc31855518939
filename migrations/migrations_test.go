package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), testutil.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestApplyTwiceAndPublishHelper: the schema applies twice, concurrently
// safe, and jetstream_publish enqueues unless the sink is applying.
func TestApplyTwiceAndPublishHelper(t *testing.T) {
	conn := connect(t)
	ctx := context.Background()
	out, err := migrations.Outbox(migrations.Names{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := migrations.Inbox(migrations.Names{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := provision.Apply(ctx, conn, out, in); err != nil {
			t.Fatalf("apply #%d: %v", i+1, err)
		}
	}
	var id *string
	if err := conn.QueryRow(ctx, `SELECT jetstream_publish('user', 'created', '{"id": 1}')::text`).Scan(&id); err != nil || id == nil {
		t.Fatalf("jetstream_publish returned %v, %v", id, err)
	}
	tx, _ := conn.Begin(ctx)
	tx.Exec(ctx, "SELECT set_config('jetstream_bridge.applying', 'system_b', true)")
	var skipped, forced *string
	tx.QueryRow(ctx, `SELECT jetstream_publish('user', 'updated', '{"id": 1}')::text`).Scan(&skipped)
	tx.QueryRow(ctx, `SELECT jetstream_publish('user', 'updated', '{"id": 1}', p_force => true)::text`).Scan(&forced)
	tx.Commit(ctx)
	if skipped != nil || forced == nil {
		t.Fatalf("while applying: plain call returned %v (want NULL), forced call %v (want an id)", skipped, forced)
	}
	var n int
	conn.QueryRow(ctx, "SELECT count(*) FROM jetstream_outbox_events").Scan(&n)
	if n != 2 {
		t.Fatalf("outbox rows=%d, want 2", n)
	}
	var pubInsert, pubUpdate bool
	conn.QueryRow(ctx, "SELECT pubinsert, pubupdate FROM pg_publication WHERE pubname = 'jetstream_bridge_outbox'").Scan(&pubInsert, &pubUpdate)
	if !pubInsert || pubUpdate {
		t.Fatalf("publication insert=%v update=%v, want inserts only", pubInsert, pubUpdate)
	}
}

// TestCustomNames: configured table and publication names replace every
// default, quoted.
func TestCustomNames(t *testing.T) {
	conn := connect(t)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA bridge"); err != nil {
		t.Fatal(err)
	}
	names := migrations.Names{Outbox: "bridge.outbox", Inbox: "bridge.inbox", Publication: "bridge_pub"}
	out, _ := migrations.Outbox(names)
	in, _ := migrations.Inbox(names)
	for _, sql := range []string{out, in} {
		if strings.Contains(sql, "jetstream_outbox_events") || strings.Contains(sql, "jetstream_inbox_events") ||
			strings.Contains(sql, "jetstream_bridge_outbox") {
			t.Fatalf("a default name survived:\n%s", sql)
		}
	}
	if err := provision.Apply(ctx, conn, out, in); err != nil {
		t.Fatal(err)
	}
	var tables int
	conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'bridge' AND tablename IN ('outbox', 'inbox', 'inbox_positions')`).Scan(&tables)
	var pub bool
	conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = 'bridge_pub' AND schemaname = 'bridge' AND tablename = 'outbox')`).Scan(&pub)
	if tables != 3 || !pub {
		t.Fatalf("tables=%d publication covers outbox=%v", tables, pub)
	}
	if _, err := conn.Exec(ctx, `SELECT jetstream_publish('user', 'created')`); err != nil {
		t.Fatal(err)
	}
	var n int
	conn.QueryRow(ctx, "SELECT count(*) FROM bridge.outbox").Scan(&n)
	if n != 1 {
		t.Fatalf("jetstream_publish wrote %d rows to bridge.outbox, want 1", n)
	}
}

func TestNamesRefuseInjection(t *testing.T) {
	for _, bad := range []migrations.Names{
		{Outbox: "public.t; DROP TABLE x"},
		{Outbox: `public."t"`},
		{Inbox: "a.b.c"},
		{Inbox: "Public.T"},
		{Publication: "p--"},
		{Publication: "p' OR '1'='1"},
		{Outbox: "public.tаble"}, // Cyrillic a
	} {
		_, err1 := migrations.Outbox(bad)
		_, err2 := migrations.Inbox(bad)
		if err1 == nil && err2 == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
