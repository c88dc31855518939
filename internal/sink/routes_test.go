package sink_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

func TestParseRoutes(t *testing.T) {
	for _, tc := range []struct {
		name, doc, err string
		n              int
	}{
		{name: "json list", n: 2, doc: `[{"event_type":"user.created","handler":"sql:public.a"},{"handler":"https://h/x"}]`},
		{name: "json object", n: 1, doc: `{"routes":[{"subject":"billing.*.orders","handler":"sql:public.a"}]}`},
		{name: "yaml list", n: 2, doc: "- resource_type: user\n  handler: sql:public.a\n- subject: billing.>\n  handler: http://h/x\n"},
		{name: "yaml object", n: 1, doc: "# comment\nroutes:\n  - handler: sql:public.a\n"},
		{name: "empty", doc: "", err: "no routes"},
		{name: "empty list", doc: "[]", err: "no routes"},
		{name: "scalar", doc: "hello", err: "expected a list"},
		{name: "no handler", doc: `[{"handler":"sql:public.a"},{"event_type":"x"}]`, err: "routes[1]: handler is required"},
		{name: "bad handler", doc: `[{"handler":"sql:public.a"},{"handler":"sql:public.a; drop table x"}]`, err: "routes[1]: handler"},
		{name: "bad scheme", doc: `[{"handler":"ftp://h/x"}]`, err: "routes[0]: handler"},
		{name: "bad subject", doc: `[{"subject":"billing..orders","handler":"sql:public.a"}]`, err: "routes[0]: subject"},
		{name: "wildcard inside token", doc: `[{"subject":"bill*.x","handler":"sql:public.a"}]`, err: "routes[0]: subject"},
		{name: "> not last", doc: `[{"subject":"a.>.b","handler":"sql:public.a"}]`, err: "routes[0]: subject"},
		{name: "unknown field", doc: `[{"event":"x","handler":"sql:public.a"}]`, err: "field event not found"},
		{name: "bad json", doc: `[{"handler":`, err: "parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			routes, err := sink.ParseRoutes([]byte(tc.doc))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err=%v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(routes), tc.n; got != want {
				t.Fatalf("len=%v, want %v", got, want)
			}
		})
	}
}

func TestLoadRoutes_NamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(path, []byte("- handler: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := sink.LoadRoutes(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "routes[0]") {
		t.Fatalf("err=%v, want the file and the route index", err)
	}
	if _, err := sink.LoadRoutes(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// named is a Handler that only has a name, for matching tests.
type named string

func (named) Handle(context.Context, pgx.Tx, *sink.Event) error { return nil }

func TestRouter_FirstMatchWins(t *testing.T) {
	routes, err := sink.ParseRoutes([]byte(`
- event_type: user.deleted
  handler: sql:public.deleted
- resource_type: user
  subject: billing.sync.orders
  handler: sql:public.user_from_billing
- resource_type: user
  handler: sql:public.user_any
- subject: "*.sync.>"
  handler: sql:public.sync_any
- subject: audit.>
  handler: sql:public.audit
`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := sink.NewRouter(context.Background(), routes, func(_ context.Context, spec string) (sink.Handler, error) {
		return named(spec), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ eventType, resourceType, subject, want string }{
		{"user.deleted", "user", "billing.sync.orders", "sql:public.deleted"},
		{"user.updated", "user", "billing.sync.orders", "sql:public.user_from_billing"},
		{"user.updated", "user", "crm.sync.orders", "sql:public.user_any"},
		{"invoice.paid", "invoice", "crm.sync.orders", "sql:public.sync_any"},
		{"invoice.paid", "invoice", "crm.sync.orders.extra", "sql:public.sync_any"},
		{"invoice.paid", "invoice", "crm.sync", ""}, // '>' needs at least one token
		{"invoice.paid", "invoice", "audit", ""},    // same
		{"invoice.paid", "invoice", "audit.x.y", "sql:public.audit"},
		{"invoice.paid", "invoice", "other.thing", ""},
		{"invoice.paid", "invoice", "billing.sync.", ""}, // empty last token
	} {
		h := r.Match(tc.eventType, tc.resourceType, tc.subject)
		got := ""
		if h != nil {
			got = string(h.(named))
		}
		if got != tc.want {
			t.Errorf("Match(%s, %s, %s)=%q, want %q", tc.eventType, tc.resourceType, tc.subject, got, tc.want)
		}
	}
}

func FuzzParseRoutes(f *testing.F) {
	f.Add([]byte(`[{"handler":"sql:public.a","subject":"a.*.>"}]`))
	f.Add([]byte("routes:\n  - handler: https://h/x\n    event_type: a\n"))
	f.Add([]byte("- {handler: x}"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		routes, err := sink.ParseRoutes(doc)
		if err != nil {
			return
		}
		// Whatever is accepted builds a router and matches without panicking.
		r, err := sink.NewRouter(context.Background(), routes, func(_ context.Context, spec string) (sink.Handler, error) {
			return named(spec), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, rt := range routes {
			r.Match(rt.EventType, rt.ResourceType, rt.Subject)
			r.Match("", "", "a.b.c")
		}
	})
}
