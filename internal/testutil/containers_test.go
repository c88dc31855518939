package testutil_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestPostgresContainer runs the container path end to end where a Docker
// engine answers, and is skipped elsewhere: the cluster accepts logical
// replication, survives a crash (immediate stop) and a restart on the same
// URL, and Close removes it.
func TestPostgresContainer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := testutil.DockerAvailable(ctx); err != nil {
		t.Skipf("no Docker engine: %v", err)
	}
	pg, err := testutil.StartPostgresContainer(ctx, localenv.PostgresOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := pg.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	query := func(sql string) string {
		t.Helper()
		conn, err := pgx.Connect(ctx, pg.URL("app"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var s string
		if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := query("SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level=%s", got)
	}
	query("SELECT lsn::text FROM pg_create_logical_replication_slot('probe', 'pgoutput')")
	if err := pg.Restart(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	if got := query("SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'probe'"); got != "1" {
		t.Fatalf("replication slot lost in the crash: %s slots", got)
	}
}
