package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestComposeFileIsConsistent checks docker-compose.yml without a Docker
// engine: it parses, every bridge service runs a real subcommand, and every
// variable it sets is one the binary accepts (a misspelt variable would be
// silently ignored at runtime).
func TestComposeFileIsConsistent(t *testing.T) {
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]any    `yaml:"depends_on"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	known := map[string][]string{}
	for _, bin := range []string{"relay", "sink"} {
		p := testutil.StartProcess(t, testutil.BuildBinary(t, bin), nil, "--help")
		if err := p.Wait(30 * time.Second); err != nil {
			t.Fatalf("%s --help: %v", bin, err)
		}
		for _, m := range regexp.MustCompile(`(?m)^  ([A-Z][A-Z0-9_]+)\s`).FindAllStringSubmatch(p.Output(), -1) {
			known[bin] = append(known[bin], m[1])
		}
	}
	want := []string{"relay_a", "relay_b", "sink_a", "sink_b", "postgres", "nats"}
	for _, name := range want {
		if _, ok := doc.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	for name, svc := range doc.Services {
		if len(svc.Command) == 0 || (svc.Command[0] != "relay" && svc.Command[0] != "sink") {
			continue
		}
		bin := svc.Command[0]
		if len(svc.Command) > 1 && svc.Command[1] != "run" {
			t.Errorf("%s: command %v is not a run", name, svc.Command)
		}
		for _, v := range []string{"DATABASE_URL", "APP_NAME", "NATS_URLS"} {
			if svc.Environment[v] == "" {
				t.Errorf("%s: %s not set", name, v)
			}
		}
		for k := range svc.Environment {
			if !slices.Contains(known[bin], k) {
				t.Errorf("%s sets %s, which `%s --help` does not list", name, k, bin)
			}
		}
		if bin == "sink" && svc.Environment["HANDLER"] == "" && svc.Environment["ROUTES_FILE"] == "" {
			t.Errorf("%s: no HANDLER", name)
		}
	}
	for name, svc := range doc.Services {
		for _, v := range svc.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%s mounts %s, which does not exist", name, src)
				}
			}
		}
	}
}
