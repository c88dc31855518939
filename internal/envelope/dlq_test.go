package envelope_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

func TestDLQHeader(t *testing.T) {
	orig := nats.Header{
		"Nats-Msg-Id":          {"e1"},
		"Nats-Expected-Stream": {"other"},
		"nats-rollup":          {"sub"},
		"Content-Type":         {"application/json"},
		"Bridge-Commit-LSN":    {"16/B374D848"},
		"Bridge-Tx-Index":      {"3"},
		"X-Multi":              {"a", "b"},
		"Bridge-Error":         {"an earlier failure"},
	}
	failedAt := time.Date(2026, 11, 24, 16, 8, 12, 500_000_000, time.FixedZone("CET", 3600))
	h := envelope.DLQHeader(orig, envelope.ClassExhausted, "handler failed:\r\nconnection refused\n", "billing.sync.shop", 5, failedAt)

	want := nats.Header{
		"Nats-Msg-Id":             {"dlq-e1"},
		"Content-Type":            {"application/json"},
		"Bridge-Commit-LSN":       {"16/B374D848"},
		"Bridge-Tx-Index":         {"3"},
		"X-Multi":                 {"a", "b"},
		"Bridge-Error":            {"handler failed:  connection refused"},
		"Bridge-Error-Class":      {"exhausted"},
		"Bridge-Original-Subject": {"billing.sync.shop"},
		"Bridge-Deliveries":       {"5"},
		"Bridge-Failed-At":        {"2026-11-24T15:08:12.5Z"},
	}
	assertHeader(t, h, want)

	// orig is untouched and shares no slices with the copy.
	h["X-Multi"][0] = "changed"
	if got := orig.Get("X-Multi"); got != "a" {
		t.Fatalf("orig X-Multi=%q after changing the copy", got)
	}
	if got := orig.Get("Nats-Msg-Id"); got != "e1" {
		t.Fatalf("orig Nats-Msg-Id=%q", got)
	}
}

func TestDLQHeaderNoOriginal(t *testing.T) {
	h := envelope.DLQHeader(nil, envelope.ClassPoison, "invalid envelope: missing event_id", "a.sync.b", 1, time.Unix(0, 0))
	want := nats.Header{
		"Bridge-Error":            {"invalid envelope: missing event_id"},
		"Bridge-Error-Class":      {"poison"},
		"Bridge-Original-Subject": {"a.sync.b"},
		"Bridge-Deliveries":       {"1"},
		"Bridge-Failed-At":        {"1970-01-01T00:00:00Z"},
	}
	assertHeader(t, h, want)
}

func TestDLQHeaderReason(t *testing.T) {
	for _, tt := range []struct {
		name, in, want string
	}{
		{"plain", "boom", "boom"},
		{"crlf", "a\r\nb\rc\nd", "a  b c d"},
		{"trimmed", "  boom \n", "boom"},
		{"invalid utf8", "bad\xffbyte", "bad\ufffdbyte"},
		{"exact limit", strings.Repeat("x", envelope.MaxErrorLen), strings.Repeat("x", envelope.MaxErrorLen)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := envelope.DLQHeader(nil, envelope.ClassHandler, tt.in, "s", 1, time.Now())
			if got := h.Get(envelope.HeaderError); got != tt.want {
				t.Fatalf("Bridge-Error=%q, want %q", got, tt.want)
			}
		})
	}
	for _, in := range []string{
		strings.Repeat("x", 5000),
		strings.Repeat("é", 3000), // cut must not split a rune
		strings.Repeat("line\r\n", 1000),
	} {
		got := envelope.DLQHeader(nil, envelope.ClassHandler, in, "s", 1, time.Now()).Get(envelope.HeaderError)
		if len(got) > envelope.MaxErrorLen {
			t.Errorf("Bridge-Error is %d bytes, over %d", len(got), envelope.MaxErrorLen)
		}
		if !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n") {
			t.Errorf("Bridge-Error %q is not one valid line", got)
		}
		if !strings.HasSuffix(got, "…") {
			t.Errorf("truncated Bridge-Error %q does not end with an ellipsis", got[len(got)-10:])
		}
	}
}

// HeaderSize is what the client counts against max_payload for headers.
func TestHeaderSize_MatchesTheWire(t *testing.T) {
	for _, h := range []nats.Header{
		nil,
		{"Nats-Msg-Id": {"abc"}},
		{"Nats-Msg-Id": {"abc"}, "X-Many": {"1", "22", "333"}, envelope.HeaderError: {strings.Repeat("e", 1024)}},
	} {
		m := &nats.Msg{Subject: "a.b", Header: h, Data: []byte("body")}
		if got, want := envelope.HeaderSize(h), m.Size()-len(m.Subject)-len(m.Data); got != want {
			t.Errorf("HeaderSize(%v)=%d, want %d", h, got, want)
		}
	}
}

func TestDLQStub_Body(t *testing.T) {
	b := envelope.DLQStub{EventID: "e1", Subject: "a.sync.b", Size: 9000, Reason: "line1\nline2 " + strings.Repeat("r", 2000)}.Body()
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["event_id"] != "e1" || got["subject"] != "a.sync.b" || got["size"] != float64(9000) || got["payload_omitted"] != true {
		t.Fatalf("stub=%s", b)
	}
	if r := got["reason"].(string); strings.Contains(r, "\n") || len(r) > envelope.MaxErrorLen {
		t.Fatalf("reason %q (%d bytes): want one line within %d bytes", r[:20], len(r), envelope.MaxErrorLen)
	}
	if _, ok := got["event_type"]; ok {
		t.Fatalf("stub=%s: empty fields should be left out", b)
	}
}
