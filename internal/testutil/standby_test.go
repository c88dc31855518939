package testutil_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// A synchronous standby has every acknowledged commit; after the primary
// crashes and the standby is promoted, a pool on the multi-host URL writes to
// the new primary.
func TestStandbyFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	primary := testutil.StartPostgres(t)
	if err := primary.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	standby := testutil.StartStandby(t, primary, testutil.Synchronous())

	pc, err := pgx.Connect(ctx, primary.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, `CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 10)`); err != nil {
		t.Fatal(err)
	}
	// Synchronous with remote_apply: the commit is visible on the standby as
	// soon as the primary acknowledged it, no waiting.
	sc, err := pgx.Connect(ctx, standby.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := sc.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 10 {
		t.Fatalf("standby sees %d rows (%v), want 10", n, err)
	}
	if _, err := sc.Exec(ctx, `INSERT INTO t VALUES (0)`); err == nil {
		t.Fatal("the standby accepted a write before promotion")
	}
	sc.Close(ctx)
	if in, err := standby.InRecovery(ctx); err != nil || !in {
		t.Fatalf("standby in recovery = %v (%v), want true", in, err)
	}

	url := testutil.MultiHostURL("app", primary, standby.Postgres)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `INSERT INTO t VALUES (11)`); err != nil {
		t.Fatalf("write through the multi-host URL to the primary: %v", err)
	}

	testutil.StopImmediate(t, primary)
	standby.Promote(t)
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := pool.Exec(ctx, `INSERT INTO t VALUES (12)`)
		return err
	})
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 12 {
		t.Fatalf("new primary holds %d rows (%v), want 12: every acknowledged commit", n, err)
	}
	var port int
	if err := pool.QueryRow(ctx, `SELECT current_setting('port')::int`).Scan(&port); err != nil || port != standby.Port() {
		t.Fatal(fmt.Errorf("pool writes to port %d (%v), want the promoted standby's %d", port, err, standby.Port()))
	}
}
