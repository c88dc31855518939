package localenv_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
)

func TestSourceRoot(t *testing.T) {
	root, err := localenv.SourceRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "localenv", "workdir.go")); err != nil {
		t.Fatalf("SourceRoot()=%s is not the bridge's source tree: %v", root, err)
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(other, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	if got, err := localenv.SourceRoot(); !errors.Is(err, localenv.ErrNoSourceTree) {
		t.Fatalf("SourceRoot() in another module = %q, %v; want ErrNoSourceTree", got, err)
	}
}

func TestLookBinaries(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := localenv.LookBinaries(dir); err == nil || err.Error() != "no executable relay" {
		t.Fatalf("empty dir: err=%v, want no executable relay", err)
	}
	for name, mode := range map[string]os.FileMode{"relay": 0o755, "sink": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := localenv.LookBinaries(dir); err == nil || err.Error() != "no executable sink" {
		t.Fatalf("sink not executable: err=%v, want no executable sink", err)
	}
	if err := os.Chmod(filepath.Join(dir, "sink"), 0o755); err != nil {
		t.Fatal(err)
	}
	relay, sink, err := localenv.LookBinaries(dir)
	if err != nil {
		t.Fatal(err)
	}
	if relay != filepath.Join(dir, "relay") || sink != filepath.Join(dir, "sink") {
		t.Fatalf("LookBinaries=%s, %s", relay, sink)
	}
}

func TestWorkDir_KeepAndRemove(t *testing.T) {
	dir, err := localenv.NewWorkDir("jsb-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if !strings.HasPrefix(filepath.Base(dir), "jsb-test-") {
		t.Errorf("work dir %s lacks the prefix", dir)
	}
	if fi, err := os.Stat(localenv.LogDir(dir)); err != nil || !fi.IsDir() {
		t.Fatalf("log dir: %v", err)
	}

	var out bytes.Buffer
	if err := localenv.CloseWorkDir(&out, dir, true); err != nil {
		t.Fatal(err)
	}
	if want := "kept " + dir + " (logs in " + localenv.LogDir(dir) + ")\n"; out.String() != want {
		t.Errorf("keep printed %q, want %q", out.String(), want)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("kept dir is gone: %v", err)
	}

	out.Reset()
	if err := localenv.CloseWorkDir(&out, dir, false); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("remove printed %q", out.String())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir still there after CloseWorkDir: %v", err)
	}
}

func TestUseOrStartNATS(t *testing.T) {
	ns, url, err := localenv.UseOrStartNATS("nats://example:4222", t.TempDir())
	if err != nil || ns != nil || url != "nats://example:4222" {
		t.Fatalf("external URL: ns=%v url=%q err=%v", ns, url, err)
	}
	ns, url, err = localenv.UseOrStartNATS("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if ns == nil {
		t.Fatal("embedded: no server")
	}
	defer ns.Shutdown()
	if url != ns.URL() {
		t.Fatalf("embedded: url=%q, want %q", url, ns.URL())
	}
}
