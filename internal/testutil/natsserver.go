package testutil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

// OldestNATSServer is the oldest nats-server release the bridge supports
// (config.MinNATSServer, at its latest patch): the tests that matter run
// against it as well as against the embedded server.
const OldestNATSServer = "2.10.29"

// NATSServer is a JetStream server a test can run against: Start starts a
// private one for the test and returns its client URL.
type NATSServer struct {
	Name  string
	Start func(tb testing.TB) string
}

// NATSServers lists the servers the tests that matter run against: the
// embedded one (the module's nats-server) and a nats-server process of
// OldestNATSServer. Use it as a table of subtests.
func NATSServers() []NATSServer {
	return []NATSServer{
		{Name: "embedded", Start: func(tb testing.TB) string { return StartNATS(tb).URL() }},
		{Name: "nats-server-" + OldestNATSServer, Start: func(tb testing.TB) string {
			return StartNATSServerBinary(tb, OldestNATSServer).URL
		}},
	}
}

// ExternalNATS is a nats-server binary running as a process of its own, with
// JetStream enabled and its store in a temporary directory.
type ExternalNATS struct {
	URL     string
	Version string
	Process *Process
}

// StartNATSServerBinary starts nats-server of version (built once by
// NATSServerBinary) on a random port with JetStream and a store in
// tb.TempDir(), and waits until JetStream answers. The process is killed
// when the test ends.
func StartNATSServerBinary(tb testing.TB, version string) *ExternalNATS {
	tb.Helper()
	bin := NATSServerBinary(tb, version)
	dir := tb.TempDir()
	store, portsDir := filepath.Join(dir, "store"), filepath.Join(dir, "ports")
	if err := os.Mkdir(portsDir, 0o755); err != nil {
		tb.Fatalf("create nats-server ports dir: %v", err)
	}
	// Port -1 lets the server pick a free port and write it to the ports
	// file, so no other process can take it between choosing and binding.
	p := StartProcess(tb, bin, nil, "-a", "127.0.0.1", "-p", "-1", "-n", "jsb-"+version,
		"-js", "-sd", store, "--ports_file_dir", portsDir)
	var url string
	Eventually(tb, 30*time.Second, func() error {
		select {
		case <-p.Done():
			return fmt.Errorf("nats-server %s exited: %s", version, p.Output())
		default:
		}
		var err error
		url, err = readPortsFile(portsDir, p.PID())
		return err
	})
	if err := localenv.WaitJetStream(context.Background(), url, 30*time.Second); err != nil {
		tb.Fatalf("nats-server %s: %v\n%s", version, err, p.Output())
	}
	return &ExternalNATS{URL: url, Version: version, Process: p}
}

// readPortsFile reads the client URL from the file nats-server writes into
// --ports_file_dir once it listens.
func readPortsFile(dir string, pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("nats-server_%d.ports", pid)))
	if err != nil {
		return "", err
	}
	var ports struct {
		Nats []string `json:"nats"`
	}
	if err := json.Unmarshal(b, &ports); err != nil {
		return "", fmt.Errorf("read nats-server ports file: %w", err)
	}
	if len(ports.Nats) == 0 {
		return "", errors.New("nats-server ports file names no client URL")
	}
	return ports.Nats[0], nil
}

var (
	natsBuildsMu sync.Mutex
	natsBuilds   = map[string]*build{}
)

// NATSServerBinary returns the path of a nats-server binary of version
// ("2.10.29"), building it with `go install` from the module proxy the
// first time. The binary is kept in the user's cache directory
// (jetstream-bridge/nats-server-VERSION), so a developer builds each version
// once and a CI run once. When it cannot be built (no network, no proxy)
// the test is skipped, unless CI=true, where it fails.
func NATSServerBinary(tb testing.TB, version string) string {
	tb.Helper()
	natsBuildsMu.Lock()
	b, ok := natsBuilds[version]
	if !ok {
		b = &build{}
		natsBuilds[version] = b
	}
	natsBuildsMu.Unlock()
	b.once.Do(func() { b.path, b.err = installNATSServer(version) })
	if b.err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("nats-server %s: %v", version, b.err)
		}
		tb.Skipf("nats-server %s is not available (CI=true makes this a failure): %v", version, b.err)
	}
	return b.path
}

// installNATSServer builds nats-server of version into its cache directory
// unless it is there already. Test binaries of several packages run at once:
// a lock file makes the others wait for the one building, and the binary is
// installed into a directory of its own and renamed into place, which is
// atomic, so no one runs a half-written file.
func installNATSServer(version string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "jetstream-bridge", "nats-server-"+version)
	bin := filepath.Join(dir, "nats-server")
	if installed(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create nats-server cache dir: %w", err)
	}
	unlock, err := lockFile(filepath.Join(dir, ".install.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if installed(bin) { // built by another test binary while this one waited
		return bin, nil
	}
	tmp, err := os.MkdirTemp(dir, "install-")
	if err != nil {
		return "", fmt.Errorf("create nats-server install dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pkg := "github.com/nats-io/nats-server/v2@v" + strings.TrimPrefix(version, "v")
	// Outside the project's module and workspace: `go install pkg@version`
	// resolves the server's own dependencies.
	cmd := exec.CommandContext(ctx, "go", "install", pkg)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %w\n%s", pkg, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "nats-server"), bin); err != nil {
		return "", fmt.Errorf("move nats-server into its cache dir: %w", err)
	}
	fmt.Fprintf(os.Stderr, "testutil: built nats-server %s in %s into %s\n", version, time.Since(start).Round(100*time.Millisecond), dir)
	return bin, nil
}

func installed(bin string) bool {
	fi, err := os.Stat(bin)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
