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

// TestInboxUpgradesPositionsKeyedWithoutProducer: a positions table of an
// earlier install, keyed on (resource_type, resource_id) only, is upgraded in
// place: its rows are kept with producer ”, the key gains the producer, and
// applying the schema again changes nothing. Under a configured name too.
func TestInboxUpgradesPositionsKeyedWithoutProducer(t *testing.T) {
	for _, tc := range []struct {
		names migrations.Names
		table string
	}{
		{migrations.Names{}, "public.jetstream_inbox_events_positions"},
		{migrations.Names{Inbox: "bridge.inbox"}, "bridge.inbox_positions"},
	} {
		t.Run(tc.table, func(t *testing.T) {
			conn := connect(t)
			ctx := context.Background()
			if _, err := conn.Exec(ctx, `CREATE SCHEMA bridge`); err != nil {
				t.Fatal(err)
			}
			// The table as earlier installs created it.
			if _, err := conn.Exec(ctx, `CREATE TABLE `+tc.table+` (
				resource_type text NOT NULL, resource_id text NOT NULL, commit_lsn pg_lsn NOT NULL,
				tx_index integer NOT NULL, event_id text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
				PRIMARY KEY (resource_type, resource_id));
				INSERT INTO `+tc.table+` (resource_type, resource_id, commit_lsn, tx_index, event_id)
				VALUES ('user', '1', '0/200', 3, 'old')`); err != nil {
				t.Fatal(err)
			}
			in, err := migrations.Inbox(tc.names)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if err := provision.Apply(ctx, conn, in); err != nil {
					t.Fatalf("apply #%d: %v", i+1, err)
				}
			}
			var key string
			if err := conn.QueryRow(ctx, `SELECT string_agg(a.attname, ',' ORDER BY k.i)
				FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY k(attnum, i), pg_attribute a
				WHERE c.conrelid = $1::regclass AND c.contype = 'p' AND a.attrelid = c.conrelid AND a.attnum = k.attnum`,
				tc.table).Scan(&key); err != nil {
				t.Fatal(err)
			}
			if key != "resource_type,resource_id,producer" {
				t.Fatalf("primary key (%s), want (resource_type,resource_id,producer)", key)
			}
			var producer, lsn, id string
			if err := conn.QueryRow(ctx, `SELECT producer, commit_lsn::text, event_id FROM `+tc.table).Scan(&producer, &lsn, &id); err != nil {
				t.Fatal(err)
			}
			if producer != "" || lsn != "0/200" || id != "old" {
				t.Fatalf("kept row: producer %q at %s (%s), want '' at 0/200 (old)", producer, lsn, id)
			}
			// Two producers may now hold positions of one key.
			if _, err := conn.Exec(ctx, `INSERT INTO `+tc.table+` (resource_type, resource_id, producer, commit_lsn, tx_index, event_id)
				VALUES ('user', '1', 'billing', '0/10', 0, 'a'), ('user', '1', 'shop', '0/20', 0, 'b')`); err != nil {
				t.Fatalf("positions of two producers on one key: %v", err)
			}
		})
	}
}
