package deploy_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// exposition is what one or more /metrics pages expose: every sample name
// (histograms as their _bucket, _sum and _count samples, plus the family
// name from # TYPE) with the label names and values seen on it.
type exposition map[string]map[string]map[string]bool // name -> label -> values

var sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+`)
var labelRe = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func (e exposition) add(page string) {
	for line := range strings.SplitSeq(page, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			if e[f[2]] == nil {
				e[f[2]] = map[string]map[string]bool{}
			}
			continue
		}
		m := sampleRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := e[m[1]]
		if labels == nil {
			labels = map[string]map[string]bool{}
			e[m[1]] = labels
		}
		for _, l := range labelRe.FindAllStringSubmatch(m[2], -1) {
			if labels[l[1]] == nil {
				labels[l[1]] = map[string]bool{}
			}
			labels[l[1]][l[2]] = true
		}
	}
}

// scrapeLabels are added by Prometheus when it scrapes, not by the binaries.
var scrapeLabels = map[string]bool{"job": true, "instance": true}

// check reports why sel does not match anything the binaries expose: an
// unknown metric, a label the metric does not have, or a value it never takes.
func (e exposition) check(sel selector) error {
	labels, ok := e[sel.name]
	if !ok {
		return fmt.Errorf("metric %s is not exposed by the relay or the sink", sel.name)
	}
	for _, m := range sel.matchers {
		if scrapeLabels[m.label] {
			continue
		}
		values, ok := labels[m.label]
		if !ok {
			return fmt.Errorf("metric %s has no label %s", sel.name, m.label)
		}
		var want []string
		switch m.op {
		case "=":
			want = []string{m.value}
		case "=~":
			if regexp.QuoteMeta(strings.ReplaceAll(m.value, "|", "")) == strings.ReplaceAll(m.value, "|", "") {
				want = strings.Split(m.value, "|") // plain alternatives: each must exist
			}
		}
		for _, v := range want {
			if !values[v] {
				return fmt.Errorf("metric %s never has %s=%q (seen: %v)", sel.name, m.label, v, keys(values))
			}
		}
	}
	return nil
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestDashboardAndAlertsUseExposedMetrics runs an active relay, a standby
// relay and a sink against real Postgres and JetStream, moves one event
// through, scrapes their /metrics and checks that every series the dashboard
// and the alert rules select exists there with the labels and values used.
func TestDashboardAndAlertsUseExposedMetrics(t *testing.T) {
	relayBin, sinkBin := testutil.BuildBinary(t, "relay"), testutil.BuildBinary(t, "sink")
	db := testutil.NewDatabase(t)
	n := testutil.StartNATS(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	t.Cleanup(hook.Close)

	common := []string{"DATABASE_URL=" + db, "NATS_URLS=" + n.URL(), "LOG_LEVEL=info"}
	relayEnv := append(slices.Clone(common), "APP_NAME=orders", "DESTINATION_APP=billing",
		"REPLICATION_SLOT=deploy_metrics", // slots are cluster-wide; this package's cluster has only this test's
		"SLOT_CHECK_INTERVAL=1s")
	active, standby, sink := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	testutil.StartProcess(t, relayBin, append(slices.Clone(relayEnv), "HTTP_ADDR="+active))
	get := func(addr, path string) (int, string) { return testutil.HTTPGet("http://" + addr + path) }
	testutil.Eventually(t, 60*time.Second, func() error {
		if code, body := get(active, "/readyz"); code != 200 {
			return fmt.Errorf("first relay /readyz=%d %s", code, body)
		}
		return nil
	})
	testutil.StartProcess(t, relayBin, append(slices.Clone(relayEnv), "HTTP_ADDR="+standby))
	testutil.StartProcess(t, sinkBin, append(slices.Clone(common), "APP_NAME=billing", "DESTINATION_APP=orders",
		"HANDLER="+hook.URL, "HTTP_ADDR="+sink))

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	testutil.Eventually(t, 60*time.Second, func() error {
		if code, body := get(sink, "/readyz"); code != 200 {
			return fmt.Errorf("sink /readyz=%d %s", code, body)
		}
		return nil
	})
	if _, err := conn.Exec(ctx, `INSERT INTO jetstream_outbox_events (resource_type, resource_id, event_type, payload)
		VALUES ('order', '1', 'created', '{"id": 1}')`); err != nil {
		t.Fatal(err)
	}

	// What the alerts rely on, seen from outside: the event went through, the
	// standby says so, and the slot's wal_status has been read.
	has := func(addr, sample string) error {
		if _, body := get(addr, "/metrics"); !strings.Contains(body, "\n"+sample+"\n") {
			return fmt.Errorf("%s does not expose %q", addr, sample)
		}
		return nil
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, c := range []struct{ addr, sample string }{
			{sink, `jetstream_bridge_sink_events_total{result="applied"} 1`},
			{active, `jetstream_bridge_relay_events_published_total 1`},
			{active, `jetstream_bridge_relay_slot_active{slot="` + slotOf(relayEnv) + `"} 1`},
			{active, `jetstream_bridge_relay_slot_wal_status{slot="` + slotOf(relayEnv) + `",status="reserved"} 1`},
			{standby, `jetstream_bridge_relay_standby{slot="` + slotOf(relayEnv) + `"} 1`},
			{standby, `jetstream_bridge_ready{check="replication"} 0`},
			{standby, `jetstream_bridge_ready{check="nats"} 1`},
			{sink, `jetstream_bridge_ready{check="consumer"} 1`},
		} {
			if err := has(c.addr, c.sample); err != nil {
				return err
			}
		}
		return nil
	})

	exposed := exposition{}
	for _, addr := range []string{active, standby, sink} {
		code, body := get(addr, "/metrics")
		if code != 200 {
			t.Fatalf("%s/metrics=%d", addr, code)
		}
		exposed.add(body)
	}
	checked := 0
	for _, q := range shippedQueries(t) {
		sels, err := selectors(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		if len(sels) == 0 {
			t.Errorf("%s selects no metric: %s", q.where, q.expr)
		}
		for _, s := range sels {
			if err := exposed.check(s); err != nil {
				t.Errorf("%s: %v", q.where, err)
			}
			checked++
		}
	}
	t.Logf("%d selectors checked against %d exposed names", checked, len(exposed))
}

func slotOf(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "REPLICATION_SLOT="); ok {
			return v
		}
	}
	return ""
}

// TestPromtool checks the rules and every dashboard query with promtool
// (Debian's prometheus package), and runs the rules' unit tests. Without
// promtool it is skipped, except in CI, where scripts/test.sh installs it.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found in CI; scripts/test.sh installs it (apt-get install prometheus)")
		}
		t.Skip("promtool not found; install Debian's prometheus package to check the rules")
	}
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("check", "rules", filepath.FromSlash("prometheus/jetstream-bridge.rules.yml"))
	run("test", "rules", filepath.FromSlash("prometheus/jetstream-bridge.rules.test.yml"))

	// Dashboard queries, as recording rules, so promtool parses them too.
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, p := range readDashboard(t).Panels {
		for _, tg := range p.Targets {
			rules = append(rules, rule{fmt.Sprintf("dashboard:panel%d:%s", i, tg.RefID),
				strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m")})
		}
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	run("check", "rules", f)
}
