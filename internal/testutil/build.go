package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

type build struct {
	once sync.Once
	path string
	err  error
}

var (
	buildsMu sync.Mutex
	builds   = map[string]*build{}
	buildDir string
)

// BuildBinary builds ./cmd/NAME (for example "relay") once per test process
// and returns the path of the binary. Main removes it.
func BuildBinary(tb testing.TB, name string) string {
	tb.Helper()
	requireMain(tb, "BuildBinary")
	buildsMu.Lock()
	b, ok := builds[name]
	if !ok {
		b = &build{}
		builds[name] = b
	}
	buildsMu.Unlock()
	b.once.Do(func() { b.path, b.err = goBuild(name) })
	if b.err != nil {
		tb.Fatalf("build %s: %v", name, b.err)
	}
	return b.path
}

// RunWithRelayAndSink builds ./cmd/NAME, relay and sink into one directory
// (each once per test process, as BuildBinary does), runs NAME with args and
// --bin-dir naming that directory (the demo and the bench then do not build
// relay and sink again), and waits at most timeout for it to exit. It fails
// the test unless NAME exits with status 0, and returns NAME's output.
func RunWithRelayAndSink(tb testing.TB, name string, timeout time.Duration, args ...string) string {
	tb.Helper()
	bin := BuildBinary(tb, name)
	BuildBinary(tb, "relay")
	BuildBinary(tb, "sink")
	cmdline := strings.Join(append([]string{name}, args...), " ")
	start := time.Now()
	p := StartProcess(tb, bin, nil, slices.Concat(args, []string{"--bin-dir", filepath.Dir(bin)})...)
	if err := p.Wait(timeout); err != nil {
		tb.Fatalf("%s: %v\n%s", cmdline, err, p.Output())
	}
	tb.Logf("%s took %s", cmdline, time.Since(start).Round(100*time.Millisecond))
	return p.Output()
}

func goBuild(name string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	buildsMu.Lock()
	if buildDir == "" {
		buildDir, err = os.MkdirTemp("", "jsb-bin-")
	}
	dir := buildDir
	buildsMu.Unlock()
	if err != nil {
		return "", fmt.Errorf("create build dir: %w", err)
	}
	out := filepath.Join(dir, name)
	// `go test` puts its own GOROOT/bin first in PATH, so this is the same toolchain.
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, output)
	}
	return out, nil
}

func cleanupBuilds() error {
	buildsMu.Lock()
	defer buildsMu.Unlock()
	if buildDir == "" {
		return nil
	}
	if err := os.RemoveAll(buildDir); err != nil {
		return fmt.Errorf("remove build dir: %w", err)
	}
	return nil
}

// ModuleRoot returns the root of the bridge's source tree, found by walking up
// from the working directory (a test runs in its package directory); see
// localenv.SourceRoot.
func ModuleRoot() (string, error) {
	root, err := localenv.SourceRoot()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	return root, nil
}
