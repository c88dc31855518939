package envelope_test

import (
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

func TestSubjects(t *testing.T) {
	for _, tt := range []struct {
		name                 string
		s                    envelope.Subjects
		dest                 string
		publish, filter, dlq string
	}{
		{"no env", envelope.Subjects{App: "shop", Dest: "billing"}, "",
			"shop.sync.billing", "billing.sync.shop", "shop.sync.dlq"},
		{"env", envelope.Subjects{Env: "production", App: "shop", Dest: "billing"}, "",
			"production.shop.sync.billing", "production.billing.sync.shop", "production.shop.sync.dlq"},
		{"dest override", envelope.Subjects{App: "shop", Dest: "billing"}, "audit",
			"shop.sync.audit", "billing.sync.shop", "shop.sync.dlq"},
		{"dest override with env", envelope.Subjects{Env: "staging", App: "shop", Dest: "billing"}, "audit",
			"staging.shop.sync.audit", "staging.billing.sync.shop", "staging.shop.sync.dlq"},
		{"seed example", envelope.Subjects{App: "pwas", Dest: "heavyworth"}, "",
			"pwas.sync.heavyworth", "heavyworth.sync.pwas", "pwas.sync.dlq"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := tt.s.Publish(tt.dest), tt.publish; got != want {
				t.Errorf("Publish(%q)=%q, want %q", tt.dest, got, want)
			}
			if got, want := tt.s.Filter(), tt.filter; got != want {
				t.Errorf("Filter()=%q, want %q", got, want)
			}
			if got, want := tt.s.DLQ(), tt.dlq; got != want {
				t.Errorf("DLQ()=%q, want %q", got, want)
			}
			if err := tt.s.Validate(); err != nil {
				t.Errorf("Validate()=%v", err)
			}
		})
	}
}

func TestSubjectsValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		s       envelope.Subjects
		wantErr string // substring; "" = valid
	}{
		{"ok", envelope.Subjects{App: "shop", Dest: "billing"}, ""},
		{"ok env", envelope.Subjects{Env: "prod", App: "shop", Dest: "billing"}, ""},
		{"ok no dest", envelope.Subjects{App: "shop"}, ""},
		{"ok dashes underscores", envelope.Subjects{App: "my-app_1", Dest: "other-app"}, ""},
		{"ok unicode", envelope.Subjects{App: "café", Dest: "bäckerei"}, ""},
		{"no app", envelope.Subjects{Dest: "billing"}, "APP_NAME is required"},
		{"app dot", envelope.Subjects{App: "my.app", Dest: "billing"}, "APP_NAME"},
		{"app space", envelope.Subjects{App: "my app", Dest: "billing"}, "APP_NAME"},
		{"app tab", envelope.Subjects{App: "my\tapp", Dest: "billing"}, "whitespace"},
		{"app star", envelope.Subjects{App: "app*", Dest: "billing"}, "wildcard"},
		{"app gt", envelope.Subjects{App: ">", Dest: "billing"}, "wildcard"},
		{"app nbsp", envelope.Subjects{App: "a\u00a0b", Dest: "billing"}, "whitespace"},
		{"app bad utf8", envelope.Subjects{App: "a\xffb", Dest: "billing"}, "UTF-8"},
		{"app del", envelope.Subjects{App: "a\x7fb", Dest: "billing"}, "control"},
		{"dest dot", envelope.Subjects{App: "shop", Dest: "bill.ing"}, "DESTINATION_APP"},
		{"dest star", envelope.Subjects{App: "shop", Dest: "*"}, "DESTINATION_APP"},
		{"dest newline", envelope.Subjects{App: "shop", Dest: "bill\ning"}, "DESTINATION_APP"},
		{"dest dlq", envelope.Subjects{App: "shop", Dest: "dlq"}, "dead-letter"},
		{"env dot", envelope.Subjects{Env: "prod.eu", App: "shop", Dest: "billing"}, "ENV_NAME"},
		{"env space", envelope.Subjects{Env: " prod", App: "shop", Dest: "billing"}, "ENV_NAME"},
		{"too long", envelope.Subjects{App: strings.Repeat("a", 200), Dest: strings.Repeat("b", 60)}, "limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate()=%v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate()=%v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateSubject(t *testing.T) {
	for _, tt := range []struct {
		subject       string
		publish       bool   // valid as a publish subject
		filter        bool   // valid as a filter subject
		wantErrSubstr string // checked on the publish error when !publish
	}{
		{"shop.sync.billing", true, true, ""},
		{"a", true, true, ""},
		{"production.shop.sync.dlq", true, true, ""},
		{"café.sync.x", true, true, ""},
		{"", false, false, "empty"},
		{".a", false, false, "token 1 is empty"},
		{"a.", false, false, "token 2 is empty"},
		{"a..b", false, false, "token 2 is empty"},
		{"a b.c", false, false, `token 1 "a b"`},
		{"a.b\tc", false, false, "token 2"},
		{"a.b\r\n", false, false, "token 2"},
		{"a.*", false, true, "wildcard"},
		{"*.sync.b", false, true, "wildcard"},
		{"a.>", false, true, "wildcard"},
		{">", false, true, "wildcard"},
		{"a.>.b", false, false, "wildcard"},
		{"a.b*", false, false, "wildcard"},
		{"a.>b", false, false, "wildcard"},
		{"a.**", false, false, "wildcard"},
		{"a.\xff", false, false, "UTF-8"},
		{strings.Repeat("a", 255), true, true, ""},
		{strings.Repeat("a", 256), false, false, "limit"},
	} {
		t.Run(tt.subject, func(t *testing.T) {
			err := envelope.ValidatePublishSubject(tt.subject)
			if (err == nil) != tt.publish {
				t.Errorf("ValidatePublishSubject(%q)=%v, want valid=%v", tt.subject, err, tt.publish)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErrSubstr) {
				t.Errorf("ValidatePublishSubject(%q)=%v, want it to contain %q", tt.subject, err, tt.wantErrSubstr)
			}
			if err := envelope.ValidateFilterSubject(tt.subject); (err == nil) != tt.filter {
				t.Errorf("ValidateFilterSubject(%q)=%v, want valid=%v", tt.subject, err, tt.filter)
			}
		})
	}
}

// TestCoversAndOverlap is the one table for subject matching: stream
// subjects against each other (provisioning), filters and routes against
// literal subjects (batching, routing).
func TestCoversAndOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b            string
		covers, overlap bool
	}{
		{"a.sync.>", "a.sync.b", true, true},
		{"a.sync.>", "a.sync.dlq", true, true},
		{"a.sync.b", "a.sync.>", false, true},
		{"a.sync.*", "a.sync.b", true, true},
		{"a.sync.*", "a.sync.b.c", false, false},
		{"a.>", "a.sync.*", true, true},
		{"a.*", "a.>", false, true},
		{"a.sync.b", "a.sync.b", true, true},
		{"a.sync.b", "b.sync.a", false, false},
		{"a.sync.>", "a.sync", false, false},
		{"*.sync.b", "a.sync.*", false, true},
		{">", "x", true, true},
		{"*.sync.>", "billing.sync.orders.extra", true, true},
		{"billing.*.orders", "billing.sync.orders", true, true},
		{"billing.*.orders", "billing.sync.orders.x", false, false},
		{"audit.>", "audit", false, false}, // '>' needs at least one token
		// Malformed subjects (an empty token) match nothing.
		{"*.sync.>", "billing.sync.", false, false},
		{"billing.*.orders", "billing..orders", false, false},
		{">", "", false, false},
		{"a..b", "a..b", false, false},
	} {
		if got := envelope.Covers(tc.a, tc.b); got != tc.covers {
			t.Errorf("Covers(%q, %q)=%v, want %v", tc.a, tc.b, got, tc.covers)
		}
		if got := envelope.Overlap(tc.a, tc.b); got != tc.overlap {
			t.Errorf("Overlap(%q, %q)=%v, want %v", tc.a, tc.b, got, tc.overlap)
		}
		if got := envelope.Overlap(tc.b, tc.a); got != tc.overlap {
			t.Errorf("Overlap(%q, %q)=%v, want %v (symmetric)", tc.b, tc.a, got, tc.overlap)
		}
	}
}

func BenchmarkCovers(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		envelope.Covers("*.sync.>", "billing.sync.orders")
	}
}
