package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// PostgresImage is the image clusters run from on the container path: the
// major version the tests run on with local binaries.
const PostgresImage = "postgres:15-alpine"

var (
	backendOnce sync.Once
	backend     localenv.Backend
	backendErr  error
)

// postgresBackend decides once per test binary where clusters run: local
// server binaries when installed, else a container when a Docker engine
// answers (TEST_POSTGRES=local or container forces one).
func postgresBackend(ctx context.Context) (localenv.Backend, error) {
	backendOnce.Do(func() {
		backend, backendErr = localenv.ChooseBackend(os.Getenv("TEST_POSTGRES"), localenv.PostgresInstalled(),
			func() error { return DockerAvailable(ctx) })
		if backendErr == nil && backend == localenv.BackendContainer {
			fmt.Fprintf(os.Stderr, "testutil: no local Postgres server binaries; clusters run in containers (%s)\n", PostgresImage)
		}
	})
	return backend, backendErr
}

// startPostgres starts a cluster on the chosen backend.
func startPostgres(ctx context.Context, opts localenv.PostgresOptions) (*localenv.Postgres, error) {
	b, err := postgresBackend(ctx)
	if err != nil {
		return nil, err
	}
	if b == localenv.BackendContainer {
		return StartPostgresContainer(ctx, opts)
	}
	return localenv.StartPostgres(ctx, opts)
}

// DockerAvailable returns nil when a Docker engine answers, found the way
// the container library finds it (DOCKER_HOST, the Docker context, the
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
	cli, err := testcontainers.NewDockerClientWithOpts(ctx) // asks the engine for its info
	if err != nil {
		return fmt.Errorf("connect to docker: %w", err)
	}
	return cli.Close()
}

// StartPostgresContainer runs PostgresImage with the settings of a local
// cluster (localenv.ServerArgs, plus opts.Settings), its port bound to a
// fixed 127.0.0.1 port (opts.Port, or a free one) so that a stopped and
// restarted server keeps its URL. Close removes the container.
func StartPostgresContainer(ctx context.Context, opts localenv.PostgresOptions) (*localenv.Postgres, error) {
	if opts.Dir == "" {
		return nil, errors.New("start postgres container: PostgresOptions.Dir is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create postgres dir: %w", err)
	}
	port := opts.Port
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick free port: %w", err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	ctr, err := tcpostgres.Run(ctx, PostgresImage,
		testcontainers.WithEnv(map[string]string{"POSTGRES_HOST_AUTH_METHOD": "trust"}),
		testcontainers.WithCmd(append([]string{"postgres"}, localenv.ServerArgs(opts.Settings)...)...),
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
	return localenv.AttachPostgres(ctx, opts.Dir, port, &pgContainer{ctr: ctr})
}

// pgContainer is a localenv.Server in a container.
type pgContainer struct {
	ctr *tcpostgres.PostgresContainer
	mu  sync.Mutex // one start or stop at a time
}

const containerDataDir = "/var/lib/postgresql/data"

func (c *pgContainer) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ctr.Start(ctx); err != nil {
		return fmt.Errorf("start postgres container: %w", err)
	}
	return nil
}

// Stop shuts the server down in mode; the container ends with its server.
func (c *pgContainer) Stop(ctx context.Context, mode string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.Running() {
		return nil
	}
	// pg_ctl inside the container gives the shutdown modes a local cluster
	// has; the exec ends with the container, so its result says little.
	_, _, _ = c.ctr.Exec(ctx, []string{"pg_ctl", "stop", "-D", containerDataDir, "-m", mode, "-w", "-t", "60"},
		tcexec.WithUser("postgres"))
	timeout := 60 * time.Second
	if err := c.ctr.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("stop postgres container: %w", err)
	}
	return nil
}

func (c *pgContainer) Running() bool {
	st, err := c.ctr.State(context.Background())
	return err == nil && st.Running
}

func (c *pgContainer) LogTail(n int) string {
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

func (c *pgContainer) Remove() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.ctr.Terminate(ctx); err != nil {
		return fmt.Errorf("remove postgres container: %w", err)
	}
	return nil
}
