package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// binaries returns the relay and sink to run: from --bin-dir, built from the
// module the demo runs in, or found beside the demo's own executable (as
// `make build` lays them out in bin/).
func (d *demo) binaries(ctx context.Context) (relay, sink string, err error) {
	if d.opts.BinDir != "" {
		if relay, sink, err = localenv.LookBinaries(d.opts.BinDir); err != nil {
			return "", "", fmt.Errorf("--bin-dir %s: %w", d.opts.BinDir, err)
		}
		return relay, sink, nil
	}
	if root, err := localenv.SourceRoot(); err == nil {
		out := filepath.Join(d.dir, "bin")
		fmt.Fprintln(d.out, "building relay and sink (go build ./cmd/relay ./cmd/sink) ...")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out+string(filepath.Separator), "./cmd/relay", "./cmd/sink")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("build relay and sink in %s: %w\n%s", root, err, b)
		}
		return filepath.Join(out, "relay"), filepath.Join(out, "sink"), nil
	}
	if exe, err := os.Executable(); err == nil {
		if r, s, err := localenv.LookBinaries(filepath.Dir(exe)); err == nil {
			return r, s, nil
		}
	}
	return "", "", errors.New("cannot find the relay and sink binaries: run the demo inside the repository " +
		"(go run ./cmd/demo), or pass --bin-dir DIR with relay and sink in it (make build puts them in bin/)")
}

// startPostgres starts the local cluster. When the server binaries are
// missing and the demo runs as root on a system with apt-get, it installs
// them first (unless --no-install), saying what it runs.
func (d *demo) startPostgres(ctx context.Context) (*localenv.Postgres, error) {
	opts := localenv.PostgresOptions{Dir: filepath.Join(d.dir, "pg")}
	pg, err := localenv.StartPostgres(ctx, opts)
	if !errors.Is(err, localenv.ErrPostgresNotInstalled) {
		return pg, err
	}
	if _, aptErr := exec.LookPath("apt-get"); d.opts.NoInstall || os.Geteuid() != 0 || aptErr != nil {
		return nil, fmt.Errorf("%w\n(or run the demo against existing databases: --db-a URL --db-b URL)", err)
	}
	logPath := filepath.Join(localenv.LogDir(d.dir), "apt-get.log")
	fmt.Fprintf(d.out, "PostgreSQL server binaries not found: installing them with\n"+
		"  apt-get update && apt-get install -y postgresql\n"+
		"(one time; output in %s; pass --no-install to skip)\n", logPath)
	if err := aptInstall(ctx, logPath); err != nil {
		return nil, err
	}
	fmt.Fprintln(d.out, "PostgreSQL installed")
	return localenv.StartPostgres(ctx, opts)
}

func aptInstall(ctx context.Context, logPath string) error {
	log, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("create %s: %w", logPath, err)
	}
	defer log.Close()
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "postgresql"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 15 {
				lines = lines[len(lines)-15:]
			}
			return fmt.Errorf("apt-get %s: %w\n%s\n%s", strings.Join(args, " "), err, strings.Join(lines, "\n"), localenv.PostgresInstallHint)
		}
	}
	return nil
}
