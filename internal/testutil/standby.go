package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// StandbyOptions configure StartStandby.
type StandbyOptions struct {
	// Name is the standby's cluster_name, and so its application_name on the
	// primary (pg_stat_replication, synchronous_standby_names). Default
	// "standby".
	Name string
	// Synchronous makes the primary wait for this standby on every commit
	// (synchronous_standby_names, synchronous_commit=on): whatever the
	// primary acknowledged is on the standby when the primary dies.
	Synchronous bool
	// Settings are extra postgresql.conf settings of the standby.
	Settings map[string]string
	// Port on 127.0.0.1; 0 picks a free one. A fixed port lets a standby
	// take the place of a crashed primary in a multi-host URL made earlier.
	Port int
}

// Standby is a streaming replica of a local primary.
type Standby struct {
	*localenv.Postgres
	tb       testing.TB
	name     string
	primary  *localenv.Postgres
	receiver int // the WAL receiver's pid while paused
}

// StartStandby makes a streaming replica of primary, a cluster started with
// StartPostgres on local server binaries: pg_basebackup -R -X stream into a
// temporary directory (as the postgres user when root, like the primary),
// then a start on a free port with hot_standby=on. It waits until the
// primary reports the standby streaming (and synchronous, with
// opts.Synchronous). It is closed when the test ends.
func StartStandby(tb testing.TB, primary *localenv.Postgres, opts StandbyOptions) *Standby {
	tb.Helper()
	if opts.Name == "" {
		opts.Name = "standby"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin, err := postgresBin()
	if err != nil {
		tb.Skipf("standby needs local postgres binaries: %v", err)
	}
	if _, err := os.Stat(filepath.Join(primary.Dir(), "data", "PG_VERSION")); err != nil {
		tb.Skipf("standby needs a primary on local binaries (%s has no data directory): %v", primary.Dir(), err)
	}
	dir := tb.TempDir()
	cred, err := serverCredential()
	if err != nil {
		tb.Fatal(err)
	}
	if cred != nil {
		// The primary's start made the temporary root traversable for the
		// server user; the new directory must belong to it.
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			tb.Fatalf("give standby dir to postgres user: %v", err)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pg_basebackup"), "-D", filepath.Join(dir, "data"),
		"-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port()), "-U", "postgres")
	cmd.Dir = dir
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tb.Fatalf("pg_basebackup from port %d: %v\n%s", primary.Port(), err, out.Bytes())
	}
	settings := map[string]string{"hot_standby": "on", "cluster_name": opts.Name}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	pg, err := localenv.StartPostgres(ctx, localenv.PostgresOptions{Dir: dir, Port: opts.Port, Settings: settings})
	if err != nil {
		tb.Fatalf("start standby: %v", err)
	}
	s := &Standby{Postgres: pg, tb: tb, name: opts.Name, primary: primary}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("standby log tail:\n%s", pg.LogTail(40))
		}
		if err := pg.Close(); err != nil {
			tb.Errorf("close standby: %v", err)
		}
	})
	if opts.Synchronous {
		s.exec(ctx, primary.URL("postgres"), "ALTER SYSTEM SET synchronous_standby_names = "+quoteLiteral(`"`+opts.Name+`"`),
			"SELECT pg_reload_conf()")
	}
	want := "async"
	if opts.Synchronous {
		want = "sync"
	}
	Eventually(tb, time.Minute, func() error {
		var state, sync string
		err := queryRow(ctx, primary.URL("postgres"), `SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1`,
			[]any{opts.Name}, &state, &sync)
		if err != nil {
			return fmt.Errorf("standby %s not connected to the primary: %w", opts.Name, err)
		}
		if state != "streaming" || sync != want {
			return fmt.Errorf("standby %s is %s/%s, want streaming/%s", opts.Name, state, sync, want)
		}
		return nil
	})
	return s
}

// Promote makes the standby a primary (pg_promote) and waits until it accepts
// writes.
func (s *Standby) Promote() {
	s.tb.Helper()
	// Retried: after KillReceiver the standby restarts before it takes
	// connections again, and a pg_promote whose connection is cut may have
	// promoted it all the same, so each attempt first asks whether it is
	// still in recovery.
	start := time.Now()
	Eventually(s.tb, 2*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var recovering bool
		if err := queryRow(ctx, s.URL("postgres"), "SELECT pg_is_in_recovery()", nil, &recovering); err != nil {
			return err
		}
		if !recovering {
			return nil
		}
		var done bool
		if err := queryRow(ctx, s.URL("postgres"), "SELECT pg_promote(true, 20)", nil, &done); err != nil {
			return err
		}
		if !done {
			return errors.New("standby still in recovery after pg_promote")
		}
		return nil
	})
	if d := time.Since(start); d > 10*time.Second {
		s.tb.Logf("standby promotion took %s", d.Round(time.Millisecond))
	}
}

// CrashPrimary stops the primary with pg_ctl stop -m immediate: no
// shutdown checkpoint, connections cut, as a machine that dies.
func (s *Standby) CrashPrimary() {
	s.tb.Helper()
	if err := s.primary.Stop("immediate"); err != nil {
		s.tb.Fatalf("stop primary: %v", err)
	}
}

// MultiHostURL builds a connection string for database that tries each
// cluster in turn and keeps the one that accepts writes
// (target_session_attrs=read-write), as an application pointed at a
// primary and its standby does.
func MultiHostURL(database string, clusters ...*localenv.Postgres) string {
	hosts := make([]string, len(clusters))
	for i, c := range clusters {
		hosts[i] = "127.0.0.1:" + strconv.Itoa(c.Port())
	}
	return "postgres://postgres@" + strings.Join(hosts, ",") + "/" + url.PathEscape(database) +
		"?sslmode=disable&target_session_attrs=read-write&connect_timeout=5"
}

func (s *Standby) exec(ctx context.Context, dsn string, stmts ...string) {
	s.tb.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		s.tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			s.tb.Fatalf("%s: %v", q, err)
		}
	}
}

func queryRow(ctx context.Context, dsn, q string, args []any, dest ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, q, args...).Scan(dest...)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// postgresBin finds the server binaries as localenv does: PG_BIN, or the
// newest version under /usr/lib/postgresql.
func postgresBin() (string, error) {
	if dir := os.Getenv("PG_BIN"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_basebackup")
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) < version(matches[j]) })
	if len(matches) == 0 {
		return "", localenv.ErrPostgresNotInstalled
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

func version(bin string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(bin))), 64)
	return v
}

// serverCredential is the postgres OS user when running as root (the
// server refuses to run as root), nil otherwise.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so the standby must run as the postgres OS user: %w", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// PauseReceiver stops the standby's WAL receiver process (SIGSTOP): it
// receives and confirms nothing more, so a synchronous primary's commits
// wait, flushed on the primary but not confirmed. The returned function
// resumes it (SIGCONT); it also runs when the test ends.
func (s *Standby) PauseReceiver() (resume func()) {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pid int
	Eventually(s.tb, 30*time.Second, func() error {
		return queryRow(ctx, s.URL("postgres"), "SELECT pid FROM pg_stat_wal_receiver", nil, &pid)
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		s.tb.Fatalf("stop wal receiver %d: %v", pid, err)
	}
	s.receiver = pid
	var once sync.Once
	resume = func() {
		once.Do(func() {
			// ESRCH: KillReceiver killed it and the postmaster reaped it.
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
				s.tb.Errorf("resume wal receiver %d: %v", pid, err)
			}
		})
	}
	s.tb.Cleanup(resume)
	return resume
}

// KillReceiver kills the WAL receiver paused by PauseReceiver (SIGKILL),
// with whatever WAL it had not read yet: the standby restarts and replays
// only the WAL it had flushed, as a standby that never received the
// primary's last commits. Call it after CrashPrimary, before Promote.
func (s *Standby) KillReceiver() {
	s.tb.Helper()
	if s.receiver == 0 {
		s.tb.Fatal("KillReceiver without PauseReceiver")
	}
	if err := syscall.Kill(s.receiver, syscall.SIGKILL); err != nil {
		s.tb.Fatalf("kill wal receiver %d: %v", s.receiver, err)
	}
	s.receiver = 0
}
