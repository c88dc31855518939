package localenv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
)

// Server controls a Postgres server that localenv does not run itself, such
// as one in a container. It listens on 127.0.0.1 at the port given to
// AttachPostgres, trusts local connections as the postgres superuser, and
// runs with ServerArgs.
type Server interface {
	// Start starts the stopped server again with its data.
	Start(ctx context.Context) error
	// Stop shuts the server down in pg_ctl's mode: smart, fast or immediate.
	Stop(ctx context.Context, mode string) error
	Running() bool
	LogTail(n int) string
	// Remove stops the server and deletes it with its data.
	Remove() error
}

// AttachPostgres returns a Postgres for s, once it accepts connections on
// 127.0.0.1:port. It behaves as a cluster StartPostgres started: URL,
// CreateDatabase, Stop, Start, Restart, LogTail; Close calls s.Remove.
func AttachPostgres(ctx context.Context, dir string, port int, s Server) (*Postgres, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve postgres dir: %w", err)
	}
	p := &Postgres{dir: dir, port: port, ext: s}
	if err := p.waitReady(ctx); err != nil {
		tail := s.LogTail(30)
		return nil, errors.Join(fmt.Errorf("wait for postgres on port %d: %w\n%s", port, err, tail), s.Remove())
	}
	return p, nil
}

// ServerArgs are the server's command-line settings ("-c", "name=value", ...)
// for a Postgres localenv does not configure itself: the settings every local
// cluster gets, then extra, except where it listens (the server's own
// network and socket) and its port.
func ServerArgs(extra map[string]string) []string {
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
	var args []string
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

// externalPgctl does for s what pg_ctl start and stop do for a local cluster.
func externalPgctl(ctx context.Context, s Server, args ...string) error {
	switch args[0] {
	case "start":
		return s.Start(ctx)
	case "stop":
		mode := "fast"
		for i, a := range args {
			if a == "-m" && i+1 < len(args) {
				mode = args[i+1]
			}
		}
		return s.Stop(ctx, mode)
	}
	return fmt.Errorf("pg_ctl %s: not supported for this server", args[0])
}

// Backend says where a test Postgres runs.
type Backend string

const (
	// BackendLocal runs initdb, pg_ctl and postgres from PG_BIN or
	// /usr/lib/postgresql/*/bin.
	BackendLocal Backend = "local"
	// BackendContainer runs Postgres in a container through a Docker engine.
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
