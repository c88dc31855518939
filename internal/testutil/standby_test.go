package testutil_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestStandby_FailoverKeepsAcknowledgedCommits: with a synchronous standby,
// every commit the primary acknowledged is on the standby after the primary
// dies; once promoted, a pool on the multi-host URL writes to it.
func TestStandby_FailoverKeepsAcknowledgedCommits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary := testutil.StartPostgres(t)
	standby := testutil.StartStandby(t, primary, testutil.StandbyOptions{Synchronous: true})

	conn, err := pgx.Connect(ctx, primary.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE t (n int primary key)"); err != nil {
		t.Fatal(err)
	}
	for n := range 20 {
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", n); err != nil {
			t.Fatal(err)
		}
	}
	// Synchronous: no waiting, the last acknowledged commit is there.
	sconn, err := pgx.Connect(ctx, standby.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var count int
	if err := sconn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&count); err != nil {
		t.Fatal(err)
	}
	sconn.Close(ctx)
	if got, want := count, 20; got != want {
		t.Fatalf("standby has %d rows, want %d", got, want)
	}

	standby.CrashPrimary()
	standby.Promote()

	pool, err := pgxpool.New(ctx, testutil.MultiHostURL("postgres", primary, standby.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "INSERT INTO t VALUES (20)"); err != nil {
		t.Fatalf("write through the multi-host URL after promotion: %v", err)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&count); err != nil {
		t.Fatal(err)
	}
	if got, want := count, 21; got != want {
		t.Fatalf("new primary has %d rows, want %d", got, want)
	}
	var port int
	if err := pool.QueryRow(ctx, "SELECT current_setting('port')::int").Scan(&port); err != nil {
		t.Fatal(err)
	}
	if port != standby.Port() {
		t.Fatalf("pool writes to port %d, want the promoted standby's %d", port, standby.Port())
	}
}
