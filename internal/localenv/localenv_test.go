package localenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustConnect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestSharedPostgres_LogicalReplication(t *testing.T) {
	ctx := testContext(t)
	url := testutil.NewDatabase(t)
	conn := mustConnect(t, ctx, url)

	var walLevel string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	if got, want := walLevel, "logical"; got != want {
		t.Fatalf("wal_level=%q, want %q", got, want)
	}

	var slotLSN string
	if err := conn.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot('t', 'pgoutput')").Scan(&slotLSN); err != nil {
		t.Fatalf("create logical replication slot: %v", err)
	}
	if slotLSN == "" {
		t.Fatal("slot has no lsn")
	}

	// pg_hba must also let replication connections in over TCP.
	repl, err := pgconn.Connect(ctx, url+"&replication=database")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	defer repl.Close(context.Background())
	results, err := repl.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		t.Fatalf("IDENTIFY_SYSTEM: %v", err)
	}
	if got, want := len(results[0].Rows), 1; got != want {
		t.Fatalf("IDENTIFY_SYSTEM rows=%v, want %v", got, want)
	}
}

func TestSharedPostgres_CreateDatabaseIdempotent(t *testing.T) {
	ctx := testContext(t)
	pg := testutil.SharedPostgres(t)
	for range 2 {
		if err := pg.CreateDatabase(ctx, "Mixed Case-db"); err != nil {
			t.Fatalf("create database: %v", err)
		}
	}
	conn := mustConnect(t, ctx, pg.URL("Mixed Case-db"))
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	if got, want := db, "Mixed Case-db"; got != want {
		t.Fatalf("current_database=%q, want %q", got, want)
	}
}

func TestPostgres_RestartImmediateKeepsCommittedData(t *testing.T) {
	ctx := testContext(t)
	pg := testutil.StartPostgres(t)
	port := pg.Port()
	if err := pg.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, pg.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	if err := pg.Restart(ctx, "immediate"); err != nil {
		t.Fatalf("restart immediate: %v", err)
	}
	if got, want := pg.Port(), port; got != want {
		t.Fatalf("port=%v after restart, want %v", got, want)
	}
	conn = mustConnect(t, ctx, pg.URL("app"))
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if got, want := n, 3; got != want {
		t.Fatalf("rows=%v after crash restart, want %v", got, want)
	}
	if !strings.Contains(pg.LogTail(100), "database system was interrupted") {
		t.Fatalf("log does not show crash recovery:\n%s", pg.LogTail(100))
	}
}

func TestPostgres_StopStartClose(t *testing.T) {
	ctx := testContext(t)
	pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{
		Dir:      filepath.Join(t.TempDir(), "pg"),
		Settings: map[string]string{"work_mem": "7MB", "application_name": "it's local"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()

	conn := mustConnect(t, ctx, pg.URL("postgres"))
	for setting, want := range map[string]string{"work_mem": "7MB", "application_name": "it's local", "max_replication_slots": "32"} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s=%q, want %q", setting, got, want)
		}
	}
	conn.Close(ctx)

	if err := pg.Stop("sideways"); err == nil {
		t.Fatal("Stop accepted an unknown mode")
	}
	if err := pg.Stop("fast"); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if c, err := pgx.Connect(ctx, pg.URL("postgres")); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatalf("start again: %v", err)
	}
	mustConnect(t, ctx, pg.URL("postgres")).Close(ctx)

	if err := pg.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := pg.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if c, err := pgx.Connect(ctx, pg.URL("postgres")); err == nil {
		c.Close(ctx)
		t.Fatal("connected after Close")
	}
	if err := pg.Start(ctx); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestStartPostgres_MissingBinaries(t *testing.T) {
	t.Setenv("PG_BIN", filepath.Join(t.TempDir(), "nowhere"))
	_, err := localenv.StartPostgres(testContext(t), localenv.PostgresOptions{Dir: t.TempDir()})
	if !errors.Is(err, localenv.ErrPostgresNotInstalled) {
		t.Fatalf("err=%v, want ErrPostgresNotInstalled", err)
	}
	if !strings.Contains(err.Error(), "apt-get update && apt-get install -y postgresql") {
		t.Fatalf("error lacks the install hint: %v", err)
	}
}

func TestNATS_RestartKeepsStream(t *testing.T) {
	ctx := testContext(t)
	n := testutil.StartNATS(t)
	url := n.URL()
	if !n.Server().JetStreamEnabled() {
		t.Fatal("jetstream not enabled")
	}

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "events.a", []byte("one")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	nc.Close()

	if err := n.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if got, want := n.URL(), url; got != want {
		t.Fatalf("url=%v after restart, want %v", got, want)
	}

	nc, err = nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "EVENTS")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(1); got != want {
		t.Fatalf("msgs=%v after restart, want %v", got, want)
	}

	n.Shutdown()
	n.Shutdown() // idempotent
	if _, err := nats.Connect(n.URL(), nats.MaxReconnects(0), nats.Timeout(time.Second)); err == nil {
		t.Fatal("connected after Shutdown")
	}
}

func TestNATS_ConfigFile(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	const config = `
port: 4222
accounts {
  APP { jetstream: enabled, users: [ { user: app, password: secret, permissions: { publish: ["events.>", "$JS.API.>", "_INBOX.>"], subscribe: ["_INBOX.>"] } } ] }
}
`
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := localenv.StartNATS(localenv.NATSOptions{Dir: filepath.Join(dir, "js"), ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if n.Port() == 4222 {
		t.Fatal("config file port was not overridden")
	}

	if nc, err := nats.Connect(n.URL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	nc, err := nats.Connect(n.URL(), nats.UserInfo("app", "secret"))
	if err != nil {
		t.Fatalf("connect as app: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("account info as app: %v", err)
	}
}

func TestCluster_ThreeNodes(t *testing.T) {
	ctx := testContext(t)
	c := testutil.StartCluster(t, 3)
	if got, want := len(strings.Split(c.URLs(), ",")), 3; got != want {
		t.Fatalf("urls=%v, want %v", got, want)
	}

	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("account info: %v", err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3}); err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}

	node := c.Nodes[1]
	url := node.URL()
	if err := node.Restart(); err != nil {
		t.Fatalf("restart node: %v", err)
	}
	if got, want := node.URL(), url; got != want {
		t.Fatalf("node url=%v after restart, want %v", got, want)
	}
	// The restarted node rejoins and serves the replicated stream.
	nc2, err := nats.Connect(node.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, err := js2.Publish(ctx, "r3.x", []byte("x")); err != nil {
			return fmt.Errorf("publish via restarted node: %w", err)
		}
		return nil
	})
}
