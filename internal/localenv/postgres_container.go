package localenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// PostgresImage is the image StartPostgresContainer runs: the major version
// the tests run on with local binaries.
const PostgresImage = "postgres:15-alpine"

// Backend says where a test Postgres runs.
type Backend string

const (
	// BackendLocal runs initdb, pg_ctl and postgres from PG_BIN or
	// /usr/lib/postgresql/*/bin.
	BackendLocal Backend = "local"
	// BackendContainer runs PostgresImage through the Docker engine.
	BackendContainer Backend = "container"
)

// ChooseBackend decides where test clusters run. force is TEST_POSTGRES
// ("", "local" or "container"); installed is what looking for the server
// binaries found (nil when they are there); docker asks the Docker engine,
// and is called only when needed. Without a preference, local binaries win
// and a container is the fallback, so a machine that has both behaves as one
// without Docker.
func ChooseBackend(force string, installed error, docker func() error) (Backend, error) {
	switch force {
	case "local":
		return BackendLocal, installed
	case "container":
		if err := docker(); err != nil {
			return "", fmt.Errorf("TEST_POSTGRES=container but no Docker engine answers: %w", err)
		}
		return BackendContainer, nil
	case "":
	default:
		return "", fmt.Errorf("TEST_POSTGRES=%q: want local, container or empty (local binaries if installed, else a container)", force)
	}
	if installed == nil {
		return BackendLocal, nil
	}
	if err := docker(); err != nil {
		return "", fmt.Errorf("%w; nor does a Docker engine answer for the container fallback (%v)", installed, err)
	}
	return BackendContainer, nil
}

// PostgresInstalled returns nil when the server binaries are found, or
// ErrPostgresNotInstalled with the install hint.
func PostgresInstalled() error {
	_, err := findPostgresBin()
	return err
}

// DockerAvailable returns nil when a Docker engine answers (found the way
// the container library finds it: DOCKER_HOST, the Docker context, the
// default socket paths).
func DockerAvailable(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	defer func() {
		// The library panics when it finds no Docker host at all.
		if r := recover(); r != nil {
			err = fmt.Errorf("no docker host: %v", r)
		}
	}()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("connect to docker: %w", err)
	}
	defer cli.Close()
	return nil // NewDockerClientWithOpts has asked the engine for its info
}

// pgContainer is a Postgres running in a container. Its port is bound to a
// fixed host port, so a stopped and restarted server keeps its URL, as a
// local one does.
type pgContainer struct {
	ctr *tcpostgres.PostgresContainer
	mu  sync.Mutex // one start or stop at a time
}

// StartPostgresContainer starts PostgresImage with the settings StartPostgres
// gives a local cluster and waits until it accepts connections. The returned
// Postgres behaves as a local one: URL, CreateDatabase, Stop (smart, fast,
// immediate), Start, Restart, LogTail; Close removes the container. Dir holds
// nothing but is created, since callers may put files there.
func StartPostgresContainer(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	if opts.Dir == "" {
		return nil, errors.New("start postgres container: PostgresOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("resolve postgres dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create postgres dir: %w", err)
	}
	port := opts.Port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	ctr, err := tcpostgres.Run(ctx, PostgresImage,
		testcontainers.WithEnv(map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"}),
		testcontainers.WithCmd(containerCommand(opts.Settings)...),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{network.MustParsePort("5432/tcp"): {{
				HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}}}
		}),
	)
	if err != nil {
		if ctr != nil {
			_ = ctr.Terminate(context.WithoutCancel(ctx))
		}
		return nil, fmt.Errorf("start postgres container: %w", err)
	}
	p := &Postgres{dir: dir, dataDir: "/var/lib/postgresql/data", port: port, ctr: &pgContainer{ctr: ctr}}
	if err := p.waitReady(ctx); err != nil {
		tail := p.LogTail(30)
		_ = ctr.Terminate(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("wait for postgres container on port %d: %w\n%s", port, err, tail)
	}
	return p, nil
}

// containerCommand is the server's command line: the local cluster's
// settings, except those about where it listens (the container's own
// network, its default socket) and the port (mapped from the host's).
func containerCommand(extra map[string]string) []string {
	settings := map[string]string{}
	for _, kv := range defaultSettings {
		settings[kv[0]] = kv[1]
	}
	for k, v := range extra {
		settings[k] = v
	}
	delete(settings, "listen_addresses")
	delete(settings, "port")
	delete(settings, "unix_socket_directories")
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	cmd := []string{"postgres"}
	for _, k := range keys {
		cmd = append(cmd, "-c", k+"="+settings[k])
	}
	return cmd
}

// pgctl does what pg_ctl start and stop do for a local cluster.
func (c *pgContainer) pgctl(ctx context.Context, args ...string) error {
	switch args[0] {
	case "start":
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.ctr.Start(ctx); err != nil {
			return fmt.Errorf("start container: %w", err)
		}
		return nil
	case "stop":
		mode := "fast"
		for i, a := range args {
			if a == "-m" && i+1 < len(args) {
				mode = args[i+1]
			}
		}
		return c.stop(ctx, mode)
	}
	return fmt.Errorf("pg_ctl %s: not supported for a container", args[0])
}

// stop shuts the server down in mode; the container ends with its server.
func (c *pgContainer) stop(ctx context.Context, mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ctr.IsRunning() {
		return nil
	}
	// pg_ctl inside the container gives the same shutdown modes as locally;
	// the exec ends with the container, so its result says little.
	_, _, _ = c.ctr.Exec(ctx, []string{"pg_ctl", "stop", "-D", "/var/lib/postgresql/data", "-m", mode, "-w", "-t", "60"},
		tcexec.WithUser("postgres"))
	timeout := 60 * time.Second
	if err := c.ctr.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("stop container: %w", err)
	}
	return nil
}

func (c *pgContainer) running() bool {
	st, err := c.ctr.State(context.Background())
	return err == nil && st.Running
}

func (c *pgContainer) logTail(n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(no postgres container log: %v)", err)
	}
	defer r.Close()
	var b bytes.Buffer
	_, _ = io.Copy(&b, r)
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *pgContainer) terminate() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.ctr.Terminate(ctx); err != nil {
		return fmt.Errorf("remove postgres container: %w", err)
	}
	return nil
}
