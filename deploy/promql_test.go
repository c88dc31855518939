package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// selector is one series selector of a PromQL expression: a metric name and
// the label matchers written beside it.
type selector struct {
	name     string
	matchers []matcher
}

type matcher struct {
	label, op, value string
}

// notMetrics are the words of PromQL that look like metric names where they
// stand: aggregation operators (followed by `by`, `without` or `(`),
// set and comparison keywords, and grouping modifiers.
var notMetrics = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "group": true,
	"limitk": true, "limit_ratio": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
}

// grouping keywords take a parenthesised list of label names, not series.
var grouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// selectors returns the series selectors of a PromQL expression. It is a
// scanner, not a parser: enough for the expressions the dashboard and the
// rules use (which promtool parses for real), and strict where it matters,
// so an unknown word is reported as a metric rather than skipped.
func selectors(expr string) ([]selector, error) {
	var out []selector
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
	}
	skipSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	closing := func(i int, open, close byte) (int, error) { // index after the bracket matching expr[i]
		depth := 0
		for j := i; j < len(expr); j++ {
			switch expr[j] {
			case open:
				depth++
			case close:
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c at %d in %q", open, i, expr)
	}
	lastWasSelector := false
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := strings.IndexByte(expr[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated string in %q", expr)
			}
			i += j + 2
			lastWasSelector = false
		case c == '[':
			j, err := closing(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '{':
			j, err := closing(i, '{', '}')
			if err != nil {
				return nil, err
			}
			if !lastWasSelector {
				return nil, fmt.Errorf("selector without a metric name in %q", expr)
			}
			ms, err := matchers(expr[i+1 : j-1])
			if err != nil {
				return nil, fmt.Errorf("%w in %q", err, expr)
			}
			out[len(out)-1].matchers = ms
			i = j
			lastWasSelector = false
		case c == '$': // a dashboard variable such as $__rate_interval
			i++
			for i < len(expr) && isIdent(expr[i], false) {
				i++
			}
			lastWasSelector = false
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.' || ((expr[i] == '+' || expr[i] == '-') && (expr[i-1] == 'e' || expr[i-1] == 'E'))) {
				i++
			}
			lastWasSelector = false
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			next := skipSpace(j)
			switch {
			case grouping[word] && next < len(expr) && expr[next] == '(':
				k, err := closing(next, '(', ')')
				if err != nil {
					return nil, err
				}
				j = k
				lastWasSelector = false
			case notMetrics[strings.ToLower(word)]:
				lastWasSelector = false
			case next < len(expr) && expr[next] == '(': // a function call
				lastWasSelector = false
			default:
				out = append(out, selector{name: word})
				lastWasSelector = true
			}
			i = j
		default:
			i++
			if !strings.ContainsRune(" \t\r\n", rune(c)) {
				lastWasSelector = false
			}
		}
	}
	return out, nil
}

var matcherRe = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)

func matchers(s string) ([]matcher, error) {
	var out []matcher
	for part := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		m := matcherRe.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("cannot read label matcher %q", part)
		}
		out = append(out, matcher{m[1], m[2], m[3]})
	}
	return out, nil
}

func TestSelectors(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []selector
	}{
		{`up`, []selector{{name: "up"}}},
		{`rate(a_total[5m])`, []selector{{name: "a_total"}}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket[$__rate_interval])))`, []selector{{name: "h_seconds_bucket"}}},
		{`sum by (job, instance) (increase(x_total{result="dead"}[10m])) > 0 or y > 1e9`,
			[]selector{{name: "x_total", matchers: []matcher{{"result", "=", "dead"}}}, {name: "y"}}},
		{`a == 0 and on (job, instance) b
		  unless on(slot) sum without(pod)(c{s=~"x|y", t!="z"}) * 256 * 1024`,
			[]selector{{name: "a"}, {name: "b"}, {name: "c", matchers: []matcher{{"s", "=~", "x|y"}, {"t", "!=", "z"}}}}},
		{`max by (slot) (max_over_time(g[1h])) * 0 unless on (slot) group_left g2 offset 5m`,
			[]selector{{name: "g"}, {name: "g2"}}},
		{`sum(rate(s_sum[5m])) / sum(rate(s_count[5m]))`, []selector{{name: "s_sum"}, {name: "s_count"}}},
	} {
		got, err := selectors(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.expr, got, tc.want)
		}
	}
	if _, err := selectors(`{__name__="x"}`); err == nil {
		t.Error("a selector without a metric name was accepted")
	}
}

// query is one PromQL expression shipped in deploy/, and where.
type query struct {
	where, expr string
}

// shippedQueries returns every PromQL expression of the dashboard's panels
// and of the alert rules.
func shippedQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	d := readDashboard(t)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			qs = append(qs, query{fmt.Sprintf("dashboard panel %q (%s)", p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{"alert " + r.Alert, r.Expr})
		}
	}
	if len(qs) == 0 {
		t.Fatal("no queries found in deploy/")
	}
	return qs
}

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		GridPos struct {
			H int `json:"h"`
			W int `json:"w"`
			X int `json:"x"`
			Y int `json:"y"`
		} `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	raw := readFile(t, "grafana/jetstream-bridge.json")
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana/jetstream-bridge.json: %v", err)
	}
	return d
}

type rulesFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) rulesFile {
	t.Helper()
	var f rulesFile
	if err := yaml.Unmarshal(readFile(t, "prometheus/jetstream-bridge.rules.yml"), &f); err != nil {
		t.Fatalf("prometheus/jetstream-bridge.rules.yml: %v", err)
	}
	return f
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(name)) // tests run in deploy/
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDashboardShape: the dashboard imports into Grafana 10/11 with the
// datasource chosen at import (a datasource variable), every panel queries
// through it, and the panels the operations guide names are there.
func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Fatalf("uid=%q title=%q", d.UID, d.Title)
	}
	hasVar := slices.ContainsFunc(d.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query string `json:"query"`
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	})
	if !hasVar {
		t.Fatal("no datasource template variable of type prometheus")
	}
	ids := map[int]bool{}
	var titles []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource %+v, want the ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: grid position %+v", p.Title, p.GridPos)
		}
	}
	for _, want := range []string{"Slot lag and retained WAL", "Commit → ack latency", "Publish rate", "Dead letters",
		"Consumer backlog", "Sink latency", "Inbox statuses written", "Active relay and standby"} {
		if !slices.Contains(titles, want) {
			t.Errorf("panel %q missing (have %q)", want, titles)
		}
	}
	for _, q := range shippedQueries(t) {
		if _, err := selectors(q.expr); err != nil {
			t.Errorf("%s: %v", q.where, err)
		}
	}
}
