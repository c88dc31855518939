package localenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// PostgresInstallHint says how to get the server binaries StartPostgres needs.
const PostgresInstallHint = "install the PostgreSQL server binaries with `apt-get update && apt-get install -y postgresql` " +
	"(or point PG_BIN at a directory containing initdb, pg_ctl and postgres)"

// ErrPostgresNotInstalled is returned by StartPostgres when no server binaries are found.
var ErrPostgresNotInstalled = errors.New("postgres server binaries not found")

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// Dir holds the cluster: data directory (Dir/data), Unix socket and server
	// log (Dir/postgres.log). Created if missing; required. An already
	// initialized cluster in Dir is reused. The caller owns and removes Dir.
	Dir string
	// Port on 127.0.0.1; 0 picks a free port.
	Port int
	// Settings are extra postgresql.conf settings, applied after the defaults.
	Settings map[string]string
}

// Postgres is a local Postgres cluster controlled through pg_ctl.
type Postgres struct {
	dir     string
	dataDir string
	logFile string
	binDir  string
	port    int
	cred    *syscall.Credential // server user when running as root; nil otherwise
	ext     Server              // set for a server localenv does not run itself (AttachPostgres)

	mu     sync.Mutex
	closed bool
}

// defaultSettings are the postgresql.conf settings every local cluster gets.
var defaultSettings = [][2]string{
	{"listen_addresses", "127.0.0.1"},
	{"wal_level", "logical"},
	{"max_replication_slots", "32"},
	{"max_wal_senders", "32"},
	{"max_connections", "200"},
	{"fsync", "off"},
	{"full_page_writes", "off"},
	{"synchronous_commit", "on"},
	{"wal_sender_timeout", "60s"},
	{"logging_collector", "off"},
}

const (
	localConfFile = "localenv.conf"
	// Unix socket paths are limited to 107 bytes; ".s.PGSQL.65535.lock" is the longest name.
	maxSocketDirLen = 107 - len("/.s.PGSQL.65535.lock")
)

// StartPostgres initializes (unless Dir already holds a cluster), configures
// and starts a Postgres cluster, and waits until it accepts connections.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.Dir == "" {
		return nil, errors.New("start postgres: PostgresOptions.Dir is required")
	}
	binDir, err := findPostgresBin()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolve postgres dir: %w", err)
	}
	p := &Postgres{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "postgres.log"),
		binDir:  binDir,
		port:    opts.Port,
	}
	if os.Geteuid() == 0 {
		if p.cred, err = postgresCredential(); err != nil {
			return nil, err
		}
	}
	if err := p.prepareDir(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := p.initdb(ctx); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("inspect postgres data dir: %w", err)
	}

	// A port picked by freePort can be taken by someone else before the
	// postmaster binds it; pick another one a few times before giving up.
	attempts := 1
	if opts.Port == 0 {
		attempts = 3
	}
	for i := 1; ; i++ {
		if opts.Port == 0 {
			if p.port, err = freePort(); err != nil {
				return nil, err
			}
		}
		if err := p.writeConfig(opts.Settings); err != nil {
			return nil, err
		}
		err = p.Start(ctx)
		if err == nil {
			return p, nil
		}
		if i >= attempts || !p.portInUse() {
			_ = p.Close()
			return nil, err
		}
	}
}

// Port returns the TCP port on 127.0.0.1.
func (p *Postgres) Port() int { return p.port }

// Dir returns the cluster directory (PostgresOptions.Dir made absolute).
func (p *Postgres) Dir() string { return p.dir }

// URL returns a connection string for database as the postgres superuser.
func (p *Postgres) URL(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, url.PathEscape(database))
}

// CreateDatabase creates database name; it is not an error if it exists.
func (p *Postgres) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return fmt.Errorf("connect to create database %q: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// Stop stops the server with pg_ctl's shutdown mode "smart", "fast" or
// "immediate" (a crash: no shutdown checkpoint, recovery on the next start)
// and waits until it is gone.
func (p *Postgres) Stop(mode string) error {
	switch mode {
	case "smart", "fast", "immediate":
	default:
		return fmt.Errorf("stop postgres: unknown mode %q, want smart, fast or immediate", mode)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stop(mode)
}

func (p *Postgres) stop(mode string) error {
	if err := p.pgctl(context.Background(), "stop", "-D", p.dataDir, "-m", mode, "-w", "-t", "60"); err != nil {
		return fmt.Errorf("stop postgres (%s): %w", mode, err)
	}
	return nil
}

// Start starts the server again with the same data directory and port and
// waits until it accepts connections. Without a deadline on ctx it waits at
// most a minute.
func (p *Postgres) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("start postgres: closed")
	}
	if err := p.pgctl(ctx, "start", "-D", p.dataDir, "-l", p.logFile, "-w", "-t", "60"); err != nil {
		return fmt.Errorf("start postgres on port %d: %w\n%s", p.port, err, p.LogTail(30))
	}
	if err := p.waitReady(ctx); err != nil {
		return fmt.Errorf("wait for postgres on port %d: %w\n%s", p.port, err, p.LogTail(30))
	}
	return nil
}

// Restart stops the server with mode and starts it again.
func (p *Postgres) Restart(ctx context.Context, mode string) error {
	if err := p.Stop(mode); err != nil {
		return err
	}
	return p.Start(ctx)
}

// Close stops the server (immediate mode) if it is running. It is idempotent
// and leaves Dir in place.
func (p *Postgres) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.ext != nil {
		return p.ext.Remove()
	}
	if !p.running() {
		return nil
	}
	if err := p.stop("immediate"); err != nil && p.running() {
		return fmt.Errorf("close postgres: %w", err)
	}
	return nil
}

// LogTail returns the last n lines of the server log.
func (p *Postgres) LogTail(n int) string {
	if p.ext != nil {
		return p.ext.LogTail(n)
	}
	b, err := os.ReadFile(p.logFile)
	if err != nil {
		return fmt.Sprintf("(no postgres log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// running reports whether pg_ctl finds a live postmaster. It is not a
// readiness check: a running server may still be in recovery.
func (p *Postgres) running() bool {
	if p.ext != nil {
		return p.ext.Running()
	}
	// pg_ctl status exits 0 when running, 3 when not, 4 without a data dir.
	return p.command(context.Background(), "pg_ctl", "status", "-D", p.dataDir).Run() == nil
}

// portInUse reports whether the last start failed because the port was taken.
func (p *Postgres) portInUse() bool {
	tail := p.LogTail(20)
	return strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use")
}

func (p *Postgres) waitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	for {
		err := p.ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Postgres) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.Ping(ctx)
}

// prepareDir creates the cluster directory. As root it hands the directory to
// the postgres user and lets that user traverse (not list) its parents, which
// os.MkdirTemp and t.TempDir create as 0700 root-owned directories.
func (p *Postgres) prepareDir() error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("create postgres dir: %w", err)
	}
	if p.cred == nil {
		return nil
	}
	if err := os.Chown(p.dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		return fmt.Errorf("give postgres dir to postgres user: %w", err)
	}
	if err := os.Chmod(p.dir, 0o700); err != nil {
		return fmt.Errorf("chmod postgres dir: %w", err)
	}
	for d := filepath.Dir(p.dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("inspect parent of postgres dir: %w", err)
		}
		if mode := fi.Mode().Perm(); mode&0o001 == 0 {
			if err := os.Chmod(d, mode|0o001); err != nil {
				return fmt.Errorf("make %s traversable for postgres user: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (p *Postgres) initdb(ctx context.Context) error {
	err := p.run(ctx, "initdb", "-D", p.dataDir, "-A", "trust", "-U", "postgres",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	if err != nil {
		return fmt.Errorf("initialize postgres cluster: %w", err)
	}
	hba := "# written by localenv: trust everything local, including replication\n" +
		"local all all trust\n" +
		"local replication all trust\n" +
		"host all all 127.0.0.1/32 trust\n" +
		"host replication all 127.0.0.1/32 trust\n"
	if err := p.writeFile(filepath.Join(p.dataDir, "pg_hba.conf"), hba); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(p.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf: %w", err)
	}
	if _, err := fmt.Fprintf(f, "\ninclude '%s'\n", localConfFile); err != nil {
		f.Close()
		return fmt.Errorf("append to postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("append to postgresql.conf: %w", err)
	}
	return nil
}

// writeConfig writes the settings file included by postgresql.conf. It is
// rewritten on every StartPostgres so port and settings follow the options.
func (p *Postgres) writeConfig(settings map[string]string) error {
	var b strings.Builder
	b.WriteString("# written by localenv on every start; edits are lost\n")
	set := func(k, v string) {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(v, "'", "''"))
	}
	for _, kv := range defaultSettings {
		set(kv[0], kv[1])
	}
	set("port", strconv.Itoa(p.port))
	// Long socket paths make the postmaster fail to start; TCP is all we use,
	// so fall back to no Unix socket rather than fail.
	if len(p.dir) <= maxSocketDirLen {
		set("unix_socket_directories", p.dir)
	} else {
		set("unix_socket_directories", "")
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k, settings[k])
	}
	if err := p.writeFile(filepath.Join(p.dataDir, localConfFile), b.String()); err != nil {
		return fmt.Errorf("write postgres settings: %w", err)
	}
	return nil
}

// writeFile writes a file into the data directory, owned by the server user.
func (p *Postgres) writeFile(name, content string) error {
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		return err
	}
	if p.cred != nil {
		return os.Chown(name, int(p.cred.Uid), int(p.cred.Gid))
	}
	return nil
}

func (p *Postgres) pgctl(ctx context.Context, args ...string) error {
	if p.ext != nil {
		return externalPgctl(ctx, p.ext, args...)
	}
	return p.run(ctx, "pg_ctl", args...)
}

// run runs a Postgres binary and returns its output in the error.
func (p *Postgres) run(ctx context.Context, name string, args ...string) error {
	cmd := p.command(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, args[0], err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func (p *Postgres) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, name), args...)
	// The server user may not be able to enter the caller's working directory,
	// and initdb fails when it cannot.
	cmd.Dir = p.dir
	// pg_ctl start redirects the postmaster's output to the log file; this only
	// guards against a child holding our pipe open.
	cmd.WaitDelay = 5 * time.Second
	if p.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	}
	return cmd
}

// findPostgresBin returns PG_BIN, or the bin directory of the highest
// Postgres version under /usr/lib/postgresql.
func findPostgresBin() (string, error) {
	if dir := os.Getenv("PG_BIN"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
			return "", fmt.Errorf("%w: PG_BIN=%s has no initdb: %s", ErrPostgresNotInstalled, dir, PostgresInstallHint)
		}
		return dir, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best, bestVersion := "", -1.0
	for _, m := range matches {
		bin := filepath.Dir(m)
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(bin)), 64)
		if err != nil {
			continue
		}
		if v > bestVersion {
			best, bestVersion = bin, v
		}
	}
	if best == "" {
		return "", fmt.Errorf("%w under /usr/lib/postgresql/*/bin: %s", ErrPostgresNotInstalled, PostgresInstallHint)
	}
	return best, nil
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, so postgres must run as the postgres OS user (created by the postgresql package): %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse postgres gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort asks the kernel for a free port on 127.0.0.1 and releases it.
func freePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts returns n distinct free ports, holding each until all are picked.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
