package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// k8sObject is the part of a Kubernetes object the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Strategy struct {
			RollingUpdate struct {
				MaxSurge       any `yaml:"maxSurge"`
				MaxUnavailable any `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		MaxUnavailable any `yaml:"maxUnavailable"`
		Template       struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
				Containers                    []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			ResourceFieldRef *struct {
				Resource string `yaml:"resource"`
			} `yaml:"resourceFieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// goRuntimeEnv are read by the Go runtime, not by the bridge's configuration.
var goRuntimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC"}

// peakRSS are the processes' peak resident memory in docs/BENCHMARKS.md
// (relay draining 100,000 events, sink applying them at CONCURRENCY 16).
var peakRSS = map[string]int64{"relay": 69e6, "sink": 26e6}

// TestKubernetesManifestsAreConsistent parses deploy/kubernetes and checks
// them without a cluster: every variable a Deployment sets is one its binary
// accepts (`--help`), every secret reference resolves, the probes hit
// /healthz and /readyz on the port HTTP_ADDR opens, the relay runs as an
// active/standby pair whose rollout does not wait for the never-ready standby,
// memory requests cover the benchmark's peak RSS, grace periods outlast
// SHUTDOWN_TIMEOUT, and the disruption budget covers the sinks.
func TestKubernetesManifestsAreConsistent(t *testing.T) {
	objs := map[string][]k8sObject{}
	var kust struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(readFile(t, "kubernetes/kustomization.yaml"), &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		if !slices.Contains(kust.Resources, filepath.Base(f)) {
			t.Errorf("%s is not listed in kustomization.yaml", f)
		}
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var o k8sObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs[o.Kind] = append(objs[o.Kind], o)
		}
	}
	for _, r := range kust.Resources {
		if _, err := os.Stat(filepath.Join("kubernetes", r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	secrets := map[string]map[string]string{}
	for _, s := range objs["Secret"] {
		secrets[s.Metadata.Name] = s.StringData
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
		if len(known[bin]) < 10 {
			t.Fatalf("%s --help lists only %v", bin, known[bin])
		}
	}

	deployments := map[string]k8sObject{}
	for _, d := range objs["Deployment"] {
		if len(d.Spec.Template.Spec.Containers) != 1 {
			t.Errorf("%s: want one container", d.Metadata.Name)
			continue
		}
		c := d.Spec.Template.Spec.Containers[0]
		if len(c.Args) == 0 || !slices.Contains([]string{"relay", "sink"}, c.Args[0]) {
			t.Errorf("%s: args %v do not start relay or sink", d.Metadata.Name, c.Args)
			continue
		}
		bin := c.Args[0]
		if len(c.Args) > 1 && c.Args[1] != "run" {
			t.Errorf("%s: args %v are not a run", d.Metadata.Name, c.Args)
		}
		deployments[bin] = d
		for k, v := range d.Spec.Selector.MatchLabels {
			if d.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("%s: selector %s=%s does not match the pod template", d.Metadata.Name, k, v)
			}
		}

		env := map[string]string{}
		for _, e := range c.Env {
			if _, dup := env[e.Name]; dup {
				t.Errorf("%s sets %s twice", d.Metadata.Name, e.Name)
			}
			env[e.Name] = e.Value
			if !slices.Contains(known[bin], e.Name) && !slices.Contains(goRuntimeEnv, e.Name) {
				t.Errorf("%s sets %s, which `%s --help` does not list", d.Metadata.Name, e.Name, bin)
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				data, ok := secrets[ref.Name]
				if !ok {
					t.Errorf("%s: %s refers to secret %s, which is not in the manifests", d.Metadata.Name, e.Name, ref.Name)
				} else if _, ok := data[ref.Key]; !ok {
					t.Errorf("%s: %s refers to key %s, which secret %s lacks", d.Metadata.Name, e.Name, ref.Key, ref.Name)
				}
				env[e.Name] = "(secret)"
			}
			if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
				if _, ok := c.Resources.Limits[strings.TrimPrefix(e.ValueFrom.ResourceFieldRef.Resource, "limits.")]; !ok {
					t.Errorf("%s: %s reads %s, which is not set", d.Metadata.Name, e.Name, e.ValueFrom.ResourceFieldRef.Resource)
				}
			}
		}
		for _, v := range []string{"DATABASE_URL", "APP_NAME", "NATS_URLS", "HTTP_ADDR"} {
			if env[v] == "" {
				t.Errorf("%s: %s not set", d.Metadata.Name, v)
			}
		}
		if bin == "sink" && env["HANDLER"] == "" && env["ROUTES_FILE"] == "" {
			t.Errorf("%s: no HANDLER", d.Metadata.Name)
		}

		// Probes: the named port is the one HTTP_ADDR listens on.
		port := 0
		for _, p := range c.Ports {
			if p.Name == "http" {
				port = p.ContainerPort
			}
		}
		if port == 0 || env["HTTP_ADDR"] != ":"+strconv.Itoa(port) {
			t.Errorf("%s: HTTP_ADDR=%q but port http is %d", d.Metadata.Name, env["HTTP_ADDR"], port)
		}
		for _, p := range []struct {
			name string
			p    *probe
			path string
		}{{"startupProbe", c.StartupProbe, "/healthz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
			if p.p == nil || p.p.HTTPGet == nil || p.p.HTTPGet.Path != p.path || (p.p.HTTPGet.Port != "http" && p.p.HTTPGet.Port != port) {
				t.Errorf("%s: %s is not an HTTP GET of %s on port http", d.Metadata.Name, p.name, p.path)
			}
		}

		// Resources: the request covers the measured peak; the limit the request.
		req, err1 := quantity(c.Resources.Requests["memory"])
		lim, err2 := quantity(c.Resources.Limits["memory"])
		switch {
		case err1 != nil || err2 != nil:
			t.Errorf("%s: memory request %q, limit %q: %v %v", d.Metadata.Name, c.Resources.Requests["memory"], c.Resources.Limits["memory"], err1, err2)
		case req < peakRSS[bin] || lim < req:
			t.Errorf("%s: memory request %d, limit %d; the benchmark's peak RSS is %d", d.Metadata.Name, req, lim, peakRSS[bin])
		}
		if c.Resources.Requests["cpu"] == "" {
			t.Errorf("%s: no cpu request", d.Metadata.Name)
		}

		// Grace: SIGTERM must be able to finish within the pod's grace period.
		shutdown, err := time.ParseDuration(env["SHUTDOWN_TIMEOUT"])
		if err != nil {
			t.Errorf("%s: SHUTDOWN_TIMEOUT=%q: %v", d.Metadata.Name, env["SHUTDOWN_TIMEOUT"], err)
		} else if grace := time.Duration(d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; grace < shutdown+5*time.Second {
			t.Errorf("%s: terminationGracePeriodSeconds %s leaves no room after SHUTDOWN_TIMEOUT %s", d.Metadata.Name, grace, shutdown)
		}
	}

	relay, ok := deployments["relay"]
	if !ok {
		t.Fatal("no relay Deployment")
	}
	if relay.Spec.Replicas == nil || *relay.Spec.Replicas != 2 {
		t.Errorf("relay replicas %v, want 2 (active and hot standby)", relay.Spec.Replicas)
	}
	if u := relay.Spec.Strategy.RollingUpdate.MaxUnavailable; u != "100%" && u != 2 {
		t.Errorf("relay maxUnavailable %v: a rollout that waits for the standby to become Ready never ends", u)
	}
	sink, ok := deployments["sink"]
	if !ok {
		t.Fatal("no sink Deployment")
	}
	var sinkPDB bool
	for _, pdb := range objs["PodDisruptionBudget"] {
		sel := pdb.Spec.Selector.MatchLabels
		matches := func(labels map[string]string) bool {
			for k, v := range sel {
				if labels[k] != v {
					return false
				}
			}
			return len(sel) > 0
		}
		if matches(relay.Spec.Template.Metadata.Labels) {
			t.Errorf("PodDisruptionBudget %s selects relays: its count of Ready pods would block draining the active relay's node", pdb.Metadata.Name)
		}
		if matches(sink.Spec.Template.Metadata.Labels) {
			sinkPDB = true
		}
	}
	if !sinkPDB {
		t.Error("no PodDisruptionBudget selects the sinks")
	}
}

// quantity reads a Kubernetes memory quantity such as 96Mi or 1G.
func quantity(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}
