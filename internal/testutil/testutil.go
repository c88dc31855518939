// Package testutil holds the helpers integration tests share: a Postgres
// cluster per test binary, private Postgres clusters and JetStream servers
// (embedded, or a nats-server release run as a process, for the oldest
// supported server), condition waits, and building and running the
// project's binaries as separate processes. Import it from _test.go files
// only.
//
// Every package that uses SharedPostgres, NewDatabase or BuildBinary needs
//
//	func TestMain(m *testing.M) { testutil.Main(m) }
//
// so that the shared resources are removed when its tests end.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

var (
	mainRunning atomic.Bool

	sharedPGOnce sync.Once
	sharedPG     *localenv.Postgres
	sharedPGDir  string
	sharedPGErr  error

	dbCounter atomic.Int64
)

// Main runs the tests and then stops shared resources.
// Usage: func TestMain(m *testing.M) { testutil.Main(m) }
func Main(m *testing.M) {
	mainRunning.Store(true)
	code := m.Run()
	if err := cleanupShared(); err != nil {
		fmt.Fprintln(os.Stderr, "testutil:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func cleanupShared() error {
	var errs []error
	if sharedPG != nil {
		if err := sharedPG.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop shared postgres: %w", err))
		}
	}
	if sharedPGDir != "" {
		if err := os.RemoveAll(sharedPGDir); err != nil {
			errs = append(errs, fmt.Errorf("remove shared postgres dir: %w", err))
		}
	}
	if err := cleanupBuilds(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func requireMain(tb testing.TB, helper string) {
	tb.Helper()
	if !mainRunning.Load() {
		tb.Fatalf("testutil.%s needs `func TestMain(m *testing.M) { testutil.Main(m) }` in this package, "+
			"or its resources would outlive the tests", helper)
	}
}

// SharedPostgres returns the Postgres cluster shared by all tests of this test
// binary, starting it on first use. Main stops and removes it. Missing Postgres
// binaries fail the test with the install hint; they never skip it.
func SharedPostgres(tb testing.TB) *localenv.Postgres {
	tb.Helper()
	requireMain(tb, "SharedPostgres")
	sharedPGOnce.Do(func() {
		sharedPGDir, sharedPGErr = os.MkdirTemp("", "jsb-pg-")
		if sharedPGErr != nil {
			sharedPGErr = fmt.Errorf("create shared postgres dir: %w", sharedPGErr)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sharedPG, sharedPGErr = startPostgres(ctx, localenv.PostgresOptions{Dir: sharedPGDir})
	})
	if sharedPGErr != nil {
		tb.Fatalf("shared postgres: %v", sharedPGErr)
	}
	return sharedPG
}

// NewDatabase creates a fresh, uniquely named database in the shared cluster
// and returns its URL. When the test ends the database is dropped together
// with its replication slots, so slots do not run out across a test binary.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	pg := SharedPostgres(tb)
	name := databaseName(tb.Name(), dbCounter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.CreateDatabase(ctx, name); err != nil {
		tb.Fatalf("new database: %v", err)
	}
	tb.Cleanup(func() {
		if err := dropDatabase(pg, name); err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
		}
	})
	return pg.URL(name)
}

// databaseName turns a test name into a valid, unique database name of at
// most 63 bytes (Postgres truncates longer identifiers).
func databaseName(testName string, n int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "t%d_", n)
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 63 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func dropDatabase(pg *localenv.Postgres, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// A slot still streamed by a leftover walsender cannot be dropped; end the
	// walsender first and retry until the slot is released.
	for {
		_, err := conn.Exec(ctx, `
			SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err != nil {
			return fmt.Errorf("terminate walsenders: %w", err)
		}
		_, err = conn.Exec(ctx, `
			SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = $1 AND NOT active`, name)
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "55006") { // object_in_use: became active again
			return fmt.Errorf("drop replication slots: %w", err)
		}
		var left int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, name).Scan(&left); err != nil {
			return fmt.Errorf("count replication slots: %w", err)
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d replication slots still active: %w", left, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return err
	}
	return nil
}

// StartPostgres starts a private cluster in tb.TempDir() for tests that stop,
// restart or crash Postgres. It is closed when the test ends.
func StartPostgres(tb testing.TB) *localenv.Postgres {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := startPostgres(ctx, localenv.PostgresOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start postgres: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("postgres log tail:\n%s", pg.LogTail(40))
		}
		if err := pg.Close(); err != nil {
			tb.Errorf("close postgres: %v", err)
		}
	})
	return pg
}

// StartNATS starts a private embedded JetStream server with its store in
// tb.TempDir(). It is shut down when the test ends.
func StartNATS(tb testing.TB) *localenv.NATS {
	tb.Helper()
	n, err := localenv.StartNATS(localenv.NATSOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	tb.Cleanup(n.Shutdown)
	return n
}

// StartNATSConfig is StartNATS with a nats-server configuration (e.g. a
// jetstream block with server limits); host, port and store are set here.
func StartNATSConfig(tb testing.TB, config string) *localenv.NATS {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), "nats.conf")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	n, err := localenv.StartNATS(localenv.NATSOptions{Dir: tb.TempDir(), ConfigFile: file})
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	tb.Cleanup(n.Shutdown)
	return n
}

// StartCluster starts an n-node embedded JetStream cluster with its stores in
// tb.TempDir(). It is shut down when the test ends.
func StartCluster(tb testing.TB, n int) *localenv.Cluster {
	tb.Helper()
	c, err := localenv.StartCluster(tb.TempDir(), n)
	if err != nil {
		tb.Fatalf("start nats cluster: %v", err)
	}
	tb.Cleanup(c.Shutdown)
	return c
}

// eventuallyInterval is how often Eventually retries.
const eventuallyInterval = 25 * time.Millisecond

// Eventually calls f every 25ms until it returns nil or timeout passes, then
// fails the test with f's last error. f must not call tb.Fatal itself.
func Eventually(tb testing.TB, timeout time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(eventuallyInterval)
	}
}
