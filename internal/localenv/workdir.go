package localenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ModulePath is the Go module path of the bridge's source tree.
const ModulePath = "github.com/jetstream-bridge/jetstream-bridge"

// ErrNoSourceTree is returned by SourceRoot when the working directory is not
// inside the bridge's source tree.
var ErrNoSourceTree = errors.New("not inside the jetstream-bridge source tree")

// SourceRoot returns the root of the bridge's source tree: the nearest
// directory at or above the working directory that holds a go.mod, provided
// that go.mod declares ModulePath. It returns ErrNoSourceTree when there is no
// go.mod above the working directory or the nearest one declares another
// module.
func SourceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find source root: %w", err)
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			ours := declaresModule(f, ModulePath)
			f.Close()
			if !ours {
				return "", ErrNoSourceTree
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNoSourceTree
		}
		dir = parent
	}
}

// declaresModule reports whether the go.mod read from r declares module path.
func declaresModule(r io.Reader, path string) bool {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.Trim(strings.TrimSpace(strings.TrimPrefix(line, "module ")), `"`) == path
		}
	}
	return false
}

// LookBinaries returns the paths of the relay and sink executables in dir
// (as `make build` lays them out in bin/). The error names the first one that
// is missing or not executable.
func LookBinaries(dir string) (relay, sink string, err error) {
	relay, sink = filepath.Join(dir, "relay"), filepath.Join(dir, "sink")
	for _, p := range []string{relay, sink} {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", "", fmt.Errorf("no executable %s", filepath.Base(p))
		}
	}
	return relay, sink, nil
}

// NewWorkDir creates a temporary directory whose name starts with prefix,
// with a "logs" subdirectory (see LogDir): where the demo and the benchmark
// keep binaries, servers' data and process logs for one run. Remove it with
// CloseWorkDir.
func NewWorkDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("create temporary directory: %w", err)
	}
	if err := os.MkdirAll(LogDir(dir), 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("create log directory: %w", err)
	}
	return dir, nil
}

// LogDir is the directory for process logs in a directory made by NewWorkDir.
func LogDir(workDir string) string { return filepath.Join(workDir, "logs") }

// CloseWorkDir removes a directory made by NewWorkDir. With keep it leaves
// it in place instead and tells w where it and its logs are.
func CloseWorkDir(w io.Writer, workDir string, keep bool) error {
	if keep {
		fmt.Fprintf(w, "kept %s (logs in %s)\n", workDir, LogDir(workDir))
		return nil
	}
	if err := os.RemoveAll(workDir); err != nil {
		return fmt.Errorf("remove %s: %w", workDir, err)
	}
	return nil
}

// UseOrStartNATS returns url and a nil *NATS when url is set (an external
// server). Otherwise it starts an embedded JetStream server with its store in
// storeDir and returns the server and its client URL; the caller shuts it
// down.
func UseOrStartNATS(url, storeDir string) (*NATS, string, error) {
	if url != "" {
		return nil, url, nil
	}
	ns, err := StartNATS(NATSOptions{Dir: storeDir})
	if err != nil {
		return nil, "", fmt.Errorf("start embedded NATS: %w", err)
	}
	return ns, ns.URL(), nil
}
