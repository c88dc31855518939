package testutil

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

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
			func() error { return localenv.DockerAvailable(ctx) })
		if backendErr == nil && backend == localenv.BackendContainer {
			fmt.Fprintf(os.Stderr, "testutil: Postgres runs in containers (%s): no local server binaries\n", localenv.PostgresImage)
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
		return localenv.StartPostgresContainer(ctx, opts)
	}
	return localenv.StartPostgres(ctx, opts)
}
