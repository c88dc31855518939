package testutil_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestNewDatabase_DropsDatabaseAndSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var url1, url2 string
	t.Run("use", func(t *testing.T) {
		url1, url2 = testutil.NewDatabase(t), testutil.NewDatabase(t)
		if url1 == url2 {
			t.Fatalf("NewDatabase returned %s twice", url1)
		}
		conn, err := pgx.Connect(ctx, url1)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('s1', 'pgoutput')"); err != nil {
			t.Fatal(err)
		}
	})

	pg := testutil.SharedPostgres(t)
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var names []string
	for _, url := range []string{url1, url2} {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, cfg.Database)
	}
	var dbs, slots int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = ANY($1)`, names).Scan(&dbs); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's1'`).Scan(&slots); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 || slots != 0 {
		t.Fatalf("after the subtest: %d databases and %d slots left, want 0 and 0", dbs, slots)
	}
}

func TestNewDatabase_Parallel(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := pgx.Connect(ctx, testutil.NewDatabase(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", fmt.Sprintf("p%d", i)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	testutil.Eventually(t, 5*time.Second, func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if got, want := calls, 3; got != want {
		t.Fatalf("calls=%v, want %v", got, want)
	}

	ft := &fatalTB{TB: t}
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil && r != errFatal {
				panic(r)
			}
		}()
		testutil.Eventually(ft, 100*time.Millisecond, func() error { return errors.New("never ready") })
	}()
	if !strings.Contains(ft.msg, "never ready") {
		t.Fatalf("failure message %q lacks the last error", ft.msg)
	}
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Fatalf("gave up after %s, before the timeout", elapsed)
	}
}

var errFatal = errors.New("fatal")

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(errFatal)
}

func TestProcess_SignalAndOutput(t *testing.T) {
	script := `trap 'echo got term; exit 3' TERM; echo "ready $GREETING"; while :; do sleep 0.05; done`
	p := testutil.StartProcess(t, "/bin/sh", []string{"GREETING=hello"}, "-c", script)
	testutil.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(p.Output(), "ready hello") {
			return fmt.Errorf("output so far: %q", p.Output())
		}
		return nil
	})
	if err := p.Wait(50 * time.Millisecond); !errors.Is(err, testutil.ErrStillRunning) {
		t.Fatalf("Wait on a running process: %v, want ErrStillRunning", err)
	}
	if got, want := p.ExitCode(), -1; got != want {
		t.Fatalf("exit code while running=%v, want %v", got, want)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitErr *exec.ExitError
	if err := p.Wait(10 * time.Second); !errors.As(err, &exitErr) {
		t.Fatalf("Wait: %v, want an exit error", err)
	}
	if got, want := p.ExitCode(), 3; got != want {
		t.Fatalf("exit code=%v, want %v", got, want)
	}
	if !strings.Contains(p.Output(), "got term") {
		t.Fatalf("output %q lacks the trap's message", p.Output())
	}
}

func TestProcess_Kill(t *testing.T) {
	p := testutil.StartProcess(t, "/bin/sh", nil, "-c", "exec sleep 60")
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	err := p.Wait(10 * time.Second)
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("Wait: %v, want an exit error", err)
	}
	if ws := exitErr.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("wait status %v, want killed by SIGKILL", ws)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "module github.com/jetstream-bridge/jetstream-bridge") {
		t.Fatalf("%s/go.mod is not this module's", root)
	}
}

func TestStartNATSServerBinary(t *testing.T) {
	t.Parallel()
	// The oldest supported release is the minimum's latest patch.
	v, err := config.ParseServerVersion(testutil.OldestNATSServer)
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != config.MinNATSServer.Major || v.Minor != config.MinNATSServer.Minor {
		t.Fatalf("OldestNATSServer %s is not a release of the minimum %s", testutil.OldestNATSServer, config.MinNATSServer)
	}
	srv := testutil.StartNATSServerBinary(t, testutil.OldestNATSServer)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got, want := nc.ConnectedServerVersion(), testutil.OldestNATSServer; got != want {
		t.Fatalf("server version %s, want %s", got, want)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "s", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
}
