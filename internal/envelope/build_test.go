package envelope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

const (
	testEventID     = "0b7d4c1e-8f7a-4c1b-9d2e-3f4a5b6c7d8e"
	testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)

var testPos = envelope.Position{CommitLSN: 0x16B374D848, TxIndex: 3}

func newRow() *envelope.Row {
	return &envelope.Row{
		EventID:      testEventID,
		ResourceType: "user",
		ResourceID:   "42",
		EventType:    "created",
		Payload:      []byte(`{"id": 42, "email": "ada@example.com"}`),
		Headers:      []byte(`{}`),
		TraceID:      "abc123",
		OccurredAt:   "2026-11-24 15:08:12.123456+00",
	}
}

func newBuilder() *envelope.Builder {
	return &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{App: "shop", Dest: "billing"}}
}

// MustBuild builds r and fails the test on error.
func MustBuild(tb testing.TB, b *envelope.Builder, r *envelope.Row, pos envelope.Position) envelope.Message {
	tb.Helper()
	m, err := b.Build(r, pos)
	if err != nil {
		tb.Fatalf("Build: %v", err)
	}
	if !json.Valid(m.Body) {
		tb.Fatalf("Build produced invalid JSON: %s", m.Body)
	}
	return m
}

// decodeBody decodes an envelope body into its keys, in order, and values.
func decodeBody(tb testing.TB, body []byte) (keys []string, fields map[string]json.RawMessage) {
	tb.Helper()
	if err := json.Unmarshal(body, &fields); err != nil {
		tb.Fatalf("decode body: %v\n%s", err, body)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // {
		tb.Fatal(err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			tb.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			tb.Fatal(err)
		}
	}
	return keys, fields
}

func str(tb testing.TB, raw json.RawMessage) string {
	tb.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		tb.Fatalf("%s is not a JSON string: %v", raw, err)
	}
	return s
}

func TestBuildGolden(t *testing.T) {
	m := MustBuild(t, newBuilder(), newRow(), testPos)
	want := `{"event_id":"0b7d4c1e-8f7a-4c1b-9d2e-3f4a5b6c7d8e","schema_version":1,"event_type":"created",` +
		`"producer":"shop","resource_type":"user","resource_id":"42","occurred_at":"2026-11-24T15:08:12.123456Z",` +
		`"trace_id":"abc123","payload":{"id": 42, "email": "ada@example.com"}}`
	if got := string(m.Body); got != want {
		t.Fatalf("body:\n got %s\nwant %s", got, want)
	}
	if got, want := m.Subject, "shop.sync.billing"; got != want {
		t.Errorf("Subject=%q, want %q", got, want)
	}
	if got, want := m.MsgID, testEventID; got != want {
		t.Errorf("MsgID=%q, want %q", got, want)
	}
	wantHeader := nats.Header{
		"Nats-Msg-Id":       {testEventID},
		"Content-Type":      {"application/json"},
		"Bridge-Commit-LSN": {"16/B374D848"},
		"Bridge-Tx-Index":   {"3"},
	}
	assertHeader(t, m.Header, wantHeader)
}

func assertHeader(tb testing.TB, got, want nats.Header) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("header has %d entries %v, want %d %v", len(got), sortedKeys(got), len(want), sortedKeys(want))
	}
	for k, wv := range want {
		gv := got[k]
		if strings.Join(gv, "\x00") != strings.Join(wv, "\x00") {
			tb.Errorf("header %s=%q, want %q", k, gv, wv)
		}
	}
}

func sortedKeys(h nats.Header) []string {
	var ks []string
	for k := range h {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestBuildFields(t *testing.T) {
	b := &envelope.Builder{Producer: "shop-relay", Subjects: envelope.Subjects{Env: "production", App: "shop", Dest: "billing"}}
	r := newRow()
	r.Payload = []byte(" \n{\"id\":\"u-1\",\"name\":\"Ada\",\"tags\":[1,2.5,true,null],\"nested\":{\"id\":9}}\t")
	r.ResourceID = ""
	m := MustBuild(t, b, r, testPos)

	keys, f := decodeBody(t, m.Body)
	wantKeys := []string{"event_id", "schema_version", "event_type", "producer", "resource_type",
		"resource_id", "occurred_at", "trace_id", "payload"}
	if strings.Join(keys, ",") != strings.Join(wantKeys, ",") {
		t.Fatalf("keys=%v, want %v", keys, wantKeys)
	}
	for _, tt := range []struct{ key, want string }{
		{"event_id", testEventID},
		{"event_type", "created"},
		{"producer", "shop-relay"},
		{"resource_type", "user"},
		{"resource_id", "u-1"},
		{"occurred_at", "2026-11-24T15:08:12.123456Z"},
		{"trace_id", "abc123"},
	} {
		if got := str(t, f[tt.key]); got != tt.want {
			t.Errorf("%s=%q, want %q", tt.key, got, tt.want)
		}
	}
	if got, want := string(f["schema_version"]), "1"; got != want {
		t.Errorf("schema_version=%s, want %s", got, want)
	}
	if got, want := string(f["payload"]), `{"id":"u-1","name":"Ada","tags":[1,2.5,true,null],"nested":{"id":9}}`; got != want {
		t.Errorf("payload=%s, want %s (verbatim, trimmed)", got, want)
	}
	if got, want := m.Subject, "production.shop.sync.billing"; got != want {
		t.Errorf("Subject=%q, want %q", got, want)
	}
}

func TestBuildProducerDefaultsToApp(t *testing.T) {
	b := &envelope.Builder{Subjects: envelope.Subjects{App: "shop", Dest: "billing"}}
	m := MustBuild(t, b, newRow(), testPos)
	_, f := decodeBody(t, m.Body)
	if got, want := str(t, f["producer"]), "shop"; got != want {
		t.Fatalf("producer=%q, want %q", got, want)
	}
}

func TestBuildSubject(t *testing.T) {
	for _, tt := range []struct {
		name        string
		subjects    envelope.Subjects
		subject     string
		destination string
		want        string
	}{
		{"default", envelope.Subjects{App: "shop", Dest: "billing"}, "", "", "shop.sync.billing"},
		{"default env", envelope.Subjects{Env: "prod", App: "shop", Dest: "billing"}, "", "", "prod.shop.sync.billing"},
		{"destination", envelope.Subjects{App: "shop", Dest: "billing"}, "", "audit", "shop.sync.audit"},
		{"destination env", envelope.Subjects{Env: "prod", App: "shop", Dest: "billing"}, "", "audit", "prod.shop.sync.audit"},
		{"destination same as default", envelope.Subjects{App: "shop", Dest: "billing"}, "", "billing", "shop.sync.billing"},
		{"destination without default", envelope.Subjects{App: "shop"}, "", "audit", "shop.sync.audit"},
		// The gem uses a subject override as is, without the env prefix.
		{"override", envelope.Subjects{Env: "prod", App: "shop", Dest: "billing"}, "custom.subject.override", "", "custom.subject.override"},
		{"override beats destination", envelope.Subjects{App: "shop", Dest: "billing"}, "x.y", "audit", "x.y"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRow()
			r.Subject, r.Destination = tt.subject, tt.destination
			m := MustBuild(t, &envelope.Builder{Subjects: tt.subjects}, r, testPos)
			if m.Subject != tt.want {
				t.Fatalf("Subject=%q, want %q", m.Subject, tt.want)
			}
		})
	}
}

func TestBuildBuilderFieldsChange(t *testing.T) {
	b := newBuilder()
	MustBuild(t, b, newRow(), testPos)
	b.Subjects.Dest = "audit"
	b.Producer = "other"
	m := MustBuild(t, b, newRow(), testPos)
	if got, want := m.Subject, "shop.sync.audit"; got != want {
		t.Fatalf("Subject=%q after changing Dest, want %q", got, want)
	}
	_, f := decodeBody(t, m.Body)
	if got, want := str(t, f["producer"]), "other"; got != want {
		t.Fatalf("producer=%q after changing Producer, want %q", got, want)
	}
}

func TestBuildInference(t *testing.T) {
	for _, tt := range []struct {
		resourceType, eventType string
		wantRT, wantET          string
	}{
		{"user", "created", "user", "created"},
		{"order", "user.created", "order", "user.created"}, // the column wins
		{"", "user.created", "user", "user.created"},       // event_type kept, as the gem does
		{"", "billing.invoice.paid", "billing", "billing.invoice.paid"},
		{"", "user.", "user", "user."},
		{"", ".created", "event", ".created"},
		{"", "created", "event", "created"}, // the gem's fallback
	} {
		t.Run(tt.resourceType+"/"+tt.eventType, func(t *testing.T) {
			r := newRow()
			r.ResourceType, r.EventType = tt.resourceType, tt.eventType
			_, f := decodeBody(t, MustBuild(t, newBuilder(), r, testPos).Body)
			if got := str(t, f["resource_type"]); got != tt.wantRT {
				t.Errorf("resource_type=%q, want %q", got, tt.wantRT)
			}
			if got := str(t, f["event_type"]); got != tt.wantET {
				t.Errorf("event_type=%q, want %q", got, tt.wantET)
			}
		})
	}
}

func TestBuildResourceIDFallback(t *testing.T) {
	for _, tt := range []struct {
		name, column, payload string
		want                  string
	}{
		{"column wins", "7", `{"id":42}`, "7"},
		{"string id", "", `{"id":"01H1234567890ABCDEF"}`, "01H1234567890ABCDEF"},
		{"numeric id", "", `{"id":42}`, "42"},
		{"decimal id kept as written", "", `{"id":1.50}`, "1.50"},
		{"exponent id kept as written", "", `{"id":-3e2}`, "-3e2"},
		{"big id exact", "", `{"id":123456789012345678901234567890}`, "123456789012345678901234567890"},
		{"escaped id", "", `{"id":"a\"b\u00e9"}`, `a"bé`},
		{"id last of duplicates", "", `{"id":1,"id":2}`, "2"},
		{"resource_id", "", `{"resource_id":"r-9"}`, "r-9"},
		{"id beats resource_id", "", `{"resource_id":"r-9","id":"i-1"}`, "i-1"},
		{"null id falls back", "", `{"id":null,"resource_id":9}`, "9"},
		{"false id falls back", "", `{"id":false,"resource_id":"x"}`, "x"},
		{"true id", "", `{"id":true}`, "true"},
		{"object id", "", `{"id":{"a":1},"resource_id":"x"}`, ""},
		{"empty string id", "", `{"id":"","resource_id":"x"}`, ""},
		{"missing", "", `{"name":"Ada"}`, ""},
		{"nested id ignored", "", `{"user":{"id":5}}`, ""},
		{"array payload", "", `[{"id":5}]`, ""},
		{"escaped key", "", `{"\u0069d":"k"}`, "k"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRow()
			r.ResourceID, r.Payload = tt.column, []byte(tt.payload)
			_, f := decodeBody(t, MustBuild(t, newBuilder(), r, testPos).Body)
			if got := str(t, f["resource_id"]); got != tt.want {
				t.Fatalf("resource_id=%q, want %q", got, tt.want)
			}
		})
	}
}

func TestBuildOccurredAt(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"2026-11-24 15:08:12.123456+00", "2026-11-24T15:08:12.123456Z"},
		{"2026-11-24 15:08:12+00", "2026-11-24T15:08:12Z"},
		{"2026-11-24 15:08:12.1+00", "2026-11-24T15:08:12.1Z"},
		{"2026-11-24 15:08:12.120000+00", "2026-11-24T15:08:12.12Z"},
		{"2026-11-24 15:08:12.000000+00", "2026-11-24T15:08:12Z"},
		{"2026-11-24 15:08:12.123456789+00", "2026-11-24T15:08:12.123456789Z"},
		{"2026-11-24 15:08:12.5+05:30", "2026-11-24T09:38:12.5Z"},
		{"2026-11-24 01:00:00-03", "2026-11-24T04:00:00Z"},
		{"2026-12-31 23:30:00-03", "2027-01-01T02:30:00Z"},
		{"2026-01-01 02:00:00+05", "2025-12-31T21:00:00Z"},
		{"1900-01-01 00:00:00+00:53:28", "1899-12-31T23:06:32Z"},
		{"2024-02-29 12:00:00+00", "2024-02-29T12:00:00Z"},
		{"0001-01-01 00:00:00+00", "0001-01-01T00:00:00Z"},
		{"9999-12-31 23:59:59.999999+00", "9999-12-31T23:59:59.999999Z"},
		{"2026-11-24T15:08:12Z", "2026-11-24T15:08:12Z"},
		{"2026-11-24T15:08:12.5+01:00", "2026-11-24T14:08:12.5Z"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			r := newRow()
			r.OccurredAt = tt.in
			_, f := decodeBody(t, MustBuild(t, newBuilder(), r, testPos).Body)
			if got := str(t, f["occurred_at"]); got != tt.want {
				t.Fatalf("occurred_at=%q, want %q", got, tt.want)
			}
		})
	}
}

func TestBuildOccurredAtInvalid(t *testing.T) {
	for _, in := range []string{
		"",
		"infinity",
		"-infinity",
		"2026-11-24 15:08:12",       // no offset
		"2026-11-24",                // date only
		"0044-03-15 12:00:00+00 BC", // BC
		"10000-01-01 00:00:00+00",   // five-digit year
		"0000-01-01 00:00:00+01",    // before year 0 in UTC
		"9999-12-31 23:00:00-03",    // after 9999 in UTC
		"2026-13-01 00:00:00+00",    // month
		"2026-00-01 00:00:00+00",    // month
		"2023-02-29 00:00:00+00",    // not a leap year
		"2026-04-31 00:00:00+00",    // day
		"2026-11-24 24:00:00+00",    // hour
		"2026-11-24 15:60:00+00",    // minute
		"2026-11-24 15:08:60+00",    // second
		"2026-11-24 15:08:12.+00",   // empty fraction
		"2026-11-24 15:08:12.1234567890+00",
		"2026-11-24 15:08:12+16",     // offset
		"2026-11-24 15:08:12+5",      // offset digits
		"2026-11-24 15:08:12+05:3",   // offset digits
		"2026-11-24 15:08:12+05:30 ", // trailing space
		"2026/11/24 15:08:12+00",
		"2026-11-24 15:08:12 UTC",
		"２０２６-11-24 15:08:12+00",
	} {
		t.Run(in, func(t *testing.T) {
			r := newRow()
			r.OccurredAt = in
			assertRowError(t, newBuilder(), r, "occurred_at")
		})
	}
}

func assertRowError(tb testing.TB, b *envelope.Builder, r *envelope.Row, reason string) {
	tb.Helper()
	m, err := b.Build(r, testPos)
	var re *envelope.RowError
	if !errors.As(err, &re) {
		tb.Fatalf("Build: err=%v (body %s), want *RowError", err, m.Body)
	}
	if re.EventID != r.EventID {
		tb.Errorf("RowError.EventID=%q, want %q", re.EventID, r.EventID)
	}
	if !strings.Contains(re.Reason, reason) {
		tb.Errorf("RowError.Reason=%q, want it to mention %q", re.Reason, reason)
	}
	if !strings.Contains(err.Error(), re.Reason) {
		tb.Errorf("Error()=%q does not carry the reason", err.Error())
	}
}

func TestBuildEscaping(t *testing.T) {
	for _, tt := range []struct{ name, in string }{
		{"quotes and backslashes", `say "hi" \ and \\ \u0041 \n`},
		{"control characters", "nul\x00 soh\x01 us\x1f nl\n cr\r tab\t bs\b ff\f del\x7f"},
		{"invalid utf8", "bad\xff\xfe utf8 \xc3 truncated \xe2\x82"},
		{"surrogate bytes", "\xed\xa0\x80"},
		{"line separators", "line\u2028sep\u2029end"},
		{"non-ascii", "café 🚀 日本語"},
		{"html", "<script>&amp;</script>"},
		{"empty-ish", " "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRow()
			r.EventType = tt.in
			r.ResourceType = tt.in
			r.ResourceID = tt.in
			r.TraceID = tt.in
			b := &envelope.Builder{Producer: tt.in, Subjects: envelope.Subjects{App: "shop", Dest: "billing"}}
			m := MustBuild(t, b, r, testPos)
			if !utf8.Valid(m.Body) {
				t.Errorf("body is not valid UTF-8: %q", m.Body)
			}
			if bytes.ContainsAny(m.Body, "\u2028\u2029") {
				t.Errorf("body carries a raw U+2028/U+2029: %q", m.Body)
			}
			// What encoding/json makes of the same string is the reference.
			ref, _ := json.Marshal(tt.in)
			var want string
			if err := json.Unmarshal(ref, &want); err != nil {
				t.Fatal(err)
			}
			_, f := decodeBody(t, m.Body)
			for _, key := range []string{"event_type", "producer", "resource_type", "resource_id", "trace_id"} {
				if got := str(t, f[key]); got != want {
					t.Errorf("%s=%q, want %q", key, got, want)
				}
			}
		})
	}
}

func TestBuildHeaders(t *testing.T) {
	base := func(extra nats.Header) nats.Header {
		h := nats.Header{
			"Nats-Msg-Id":       {testEventID},
			"Content-Type":      {"application/json"},
			"Bridge-Commit-LSN": {"16/B374D848"},
			"Bridge-Tx-Index":   {"3"},
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	const otherTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	for _, tt := range []struct {
		name        string
		headers     string
		traceID     string
		want        nats.Header
		wantTraceID string // the body's trace_id
	}{
		{"nil", "", "abc123", base(nil), "abc123"},
		{"empty object", "{}", "abc123", base(nil), "abc123"},
		{"spaces", " { } ", "abc123", base(nil), "abc123"},
		{"json null", "null", "abc123", base(nil), "abc123"},
		{"scalars", `{"X-Tenant": "acme", "X-Count": 3, "X-Ratio": 1.5e3, "X-Flag": true, "X-Off": false, "X-Null": null}`, "abc123",
			base(nats.Header{"X-Tenant": {"acme"}, "X-Count": {"3"}, "X-Ratio": {"1.5e3"}, "X-Flag": {"true"}, "X-Off": {"false"}}), "abc123"},
		{"escaped name and value", `{"X-A\u0062":"v\u00e9 \"q\""}`, "abc123",
			base(nats.Header{"X-Ab": {`vé "q"`}}), "abc123"},
		{"empty value", `{"X-Empty":""}`, "abc123", base(nats.Header{"X-Empty": {""}}), "abc123"},
		{"duplicate name last wins", `{"X-A":"1","X-A":"2"}`, "abc123", base(nats.Header{"X-A": {"2"}}), "abc123"},
		{"trace column is a traceparent", "{}", testTraceparent,
			base(nats.Header{"traceparent": {testTraceparent}}), testTraceparent},
		{"trace column not a traceparent", "{}", "4bf92f3577b34da6a3ce929d0e0e4736", base(nil), "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"traceparent all-zero trace id", "{}", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", base(nil),
			"00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{"traceparent uppercase", "{}", strings.ToUpper(testTraceparent), base(nil), strings.ToUpper(testTraceparent)},
		{"traceparent from row headers", `{"traceparent":"` + testTraceparent + `"}`, "",
			base(nats.Header{"traceparent": {testTraceparent}}), "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"escaped traceparent from row headers", `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u0031"}`, "",
			base(nats.Header{"traceparent": {testTraceparent}}), "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"row headers' traceparent wins", `{"traceparent":"` + otherTraceparent + `"}`, testTraceparent,
			base(nats.Header{"traceparent": {otherTraceparent}}), testTraceparent},
		{"row headers' invalid traceparent passed on, not used", `{"traceparent":"nope"}`, "",
			base(nats.Header{"traceparent": {"nope"}}), ""},
		{"no trace at all", "{}", "", base(nil), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRow()
			r.TraceID = tt.traceID
			if tt.headers != "" {
				r.Headers = []byte(tt.headers)
			} else {
				r.Headers = nil
			}
			m := MustBuild(t, newBuilder(), r, testPos)
			assertHeader(t, m.Header, tt.want)
			_, f := decodeBody(t, m.Body)
			if got := str(t, f["trace_id"]); got != tt.wantTraceID {
				t.Errorf("trace_id=%q, want %q", got, tt.wantTraceID)
			}
		})
	}
}

func TestBuildHeadersWithoutPosition(t *testing.T) {
	m := MustBuild(t, newBuilder(), newRow(), envelope.Position{})
	assertHeader(t, m.Header, nats.Header{"Nats-Msg-Id": {testEventID}, "Content-Type": {"application/json"}})
}

func TestBuildHeaderValuesIndependent(t *testing.T) {
	r := newRow()
	r.Headers = []byte(`{"X-A":"a","X-B":"b"}`)
	m := MustBuild(t, newBuilder(), r, testPos)
	for k := range m.Header {
		m.Header.Add(k, "more")
	}
	for k, v := range m.Header {
		if len(v) != 2 || v[1] != "more" {
			t.Fatalf("header %s=%q after Add", k, v)
		}
	}
	if got, want := m.Header.Get("X-A"), "a"; got != want {
		t.Fatalf("X-A=%q, want %q", got, want)
	}
	if got, want := m.Header.Get(envelope.HeaderMsgID), testEventID; got != want {
		t.Fatalf("Nats-Msg-Id=%q, want %q", got, want)
	}
}

func TestBuildRowErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		b      *envelope.Builder
		mutate func(r *envelope.Row)
		reason string
	}{
		{"empty event_id", nil, func(r *envelope.Row) { r.EventID = "" }, "event_id"},
		{"event_id with newline", nil, func(r *envelope.Row) { r.EventID = "a\nb" }, "event_id"},
		{"event_id with cr", nil, func(r *envelope.Row) { r.EventID = "a\rb" }, "event_id"},
		{"event_id invalid utf8", nil, func(r *envelope.Row) { r.EventID = "a\xffb" }, "event_id"},
		{"event_id with nul", nil, func(r *envelope.Row) { r.EventID = "a\x00b" }, "event_id"},
		{"event_id with tab", nil, func(r *envelope.Row) { r.EventID = "a\tb" }, "event_id"},
		{"empty event_type", nil, func(r *envelope.Row) { r.EventType = "" }, "event_type"},

		{"subject empty token", nil, func(r *envelope.Row) { r.Subject = "a..b" }, "subject"},
		{"subject wildcard", nil, func(r *envelope.Row) { r.Subject = "a.*" }, "subject"},
		{"subject gt", nil, func(r *envelope.Row) { r.Subject = "a.>" }, "subject"},
		{"subject space", nil, func(r *envelope.Row) { r.Subject = "a b" }, "subject"},
		{"subject is the dlq", nil, func(r *envelope.Row) { r.Subject = "shop.sync.dlq" }, "dead-letter"},
		{"subject too long", nil, func(r *envelope.Row) { r.Subject = strings.Repeat("a", 256) }, "subject"},
		{"destination dot", nil, func(r *envelope.Row) { r.Destination = "a.b" }, "destination"},
		{"destination wildcard", nil, func(r *envelope.Row) { r.Destination = "*" }, "destination"},
		{"destination space", nil, func(r *envelope.Row) { r.Destination = "a b" }, "destination"},
		{"destination dlq", nil, func(r *envelope.Row) { r.Destination = "dlq" }, "dead-letter"},
		{"destination too long", nil, func(r *envelope.Row) { r.Destination = strings.Repeat("d", 250) }, "destination"},
		{"no destination", &envelope.Builder{Subjects: envelope.Subjects{App: "shop"}}, func(r *envelope.Row) {}, "DESTINATION_APP"},

		{"payload NULL", nil, func(r *envelope.Row) { r.Payload = nil }, "NULL"},
		{"payload empty", nil, func(r *envelope.Row) { r.Payload = []byte{} }, "empty"},
		{"payload spaces", nil, func(r *envelope.Row) { r.Payload = []byte(" \n") }, "empty"},
		{"payload json null", nil, func(r *envelope.Row) { r.Payload = []byte("null") }, "object or array"},
		{"payload string", nil, func(r *envelope.Row) { r.Payload = []byte(`"x"`) }, "object or array"},
		{"payload number", nil, func(r *envelope.Row) { r.Payload = []byte(`42`) }, "object or array"},
		{"payload invalid", nil, func(r *envelope.Row) { r.Payload = []byte(`{"a":}`) }, "valid JSON"},
		{"payload truncated", nil, func(r *envelope.Row) { r.Payload = []byte(`{"a":1`) }, "valid JSON"},
		{"payload trailing", nil, func(r *envelope.Row) { r.Payload = []byte(`{"a":1} x`) }, "valid JSON"},
		{"payload two values", nil, func(r *envelope.Row) { r.Payload = []byte(`{}{}`) }, "valid JSON"},
		{"payload bad array", nil, func(r *envelope.Row) { r.Payload = []byte(`[1,]`) }, "valid JSON"},
		{"payload raw control char", nil, func(r *envelope.Row) { r.Payload = []byte("{\"a\":\"\x01\"}") }, "valid JSON"},
		{"payload too deep", nil, func(r *envelope.Row) {
			r.Payload = []byte(strings.Repeat("[", 9500) + strings.Repeat("]", 9500))
		}, "valid JSON"},

		{"headers array", nil, func(r *envelope.Row) { r.Headers = []byte(`[1]`) }, "object"},
		{"headers string", nil, func(r *envelope.Row) { r.Headers = []byte(`"x"`) }, "object"},
		{"headers invalid", nil, func(r *envelope.Row) { r.Headers = []byte(`{"a":`) }, "valid JSON"},
		{"headers trailing", nil, func(r *envelope.Row) { r.Headers = []byte(`{"a":"b"} x`) }, "valid JSON"},
		{"headers nully", nil, func(r *envelope.Row) { r.Headers = []byte(`nul`) }, "valid JSON"},
		{"header nested object", nil, func(r *envelope.Row) { r.Headers = []byte(`{"X":{"a":1}}`) }, "string, number or boolean"},
		{"header nested array", nil, func(r *envelope.Row) { r.Headers = []byte(`{"X":[1]}`) }, "string, number or boolean"},
		{"header value crlf", nil, func(r *envelope.Row) { r.Headers = []byte(`{"X":"a\r\nNats-Rollup: all"}`) }, "CR or LF"},
		{"header value lf", nil, func(r *envelope.Row) { r.Headers = []byte(`{"X":"a\nb"}`) }, "CR or LF"},
		{"header name space", nil, func(r *envelope.Row) { r.Headers = []byte(`{"bad name":"x"}`) }, "header names"},
		{"header name colon", nil, func(r *envelope.Row) { r.Headers = []byte(`{"a:b":"x"}`) }, "header names"},
		{"header name newline", nil, func(r *envelope.Row) { r.Headers = []byte(`{"a\nb":"x"}`) }, "header names"},
		{"header name empty", nil, func(r *envelope.Row) { r.Headers = []byte(`{"":"x"}`) }, "empty header name"},
		{"header name non-ascii", nil, func(r *envelope.Row) { r.Headers = []byte(`{"é":"x"}`) }, "header names"},
		{"header Nats-Msg-Id", nil, func(r *envelope.Row) { r.Headers = []byte(`{"Nats-Msg-Id":"x"}`) }, "Nats-*"},
		{"header nats-msg-id", nil, func(r *envelope.Row) { r.Headers = []byte(`{"nats-msg-id":"x"}`) }, "Nats-*"},
		{"header Nats-Rollup", nil, func(r *envelope.Row) { r.Headers = []byte(`{"Nats-Rollup":"all"}`) }, "Nats-*"},
		{"header Nats-Expected-Stream", nil, func(r *envelope.Row) { r.Headers = []byte(`{"Nats-Expected-Stream":"x"}`) }, "Nats-*"},
		{"header Content-Type", nil, func(r *envelope.Row) { r.Headers = []byte(`{"Content-Type":"text/plain"}`) }, "application/json"},
		{"header content-type", nil, func(r *envelope.Row) { r.Headers = []byte(`{"content-type":"application/json"}`) }, "application/json"},
		{"header Bridge-Commit-LSN", nil, func(r *envelope.Row) { r.Headers = []byte(`{"Bridge-Commit-LSN":"0/0"}`) }, "Bridge-*"},
		{"header bridge-error", nil, func(r *envelope.Row) { r.Headers = []byte(`{"bridge-error":"x"}`) }, "Bridge-*"},
		{"header escaped reserved", nil, func(r *envelope.Row) { r.Headers = []byte(`{"Nats-Msg-\u0049d":"x"}`) }, "Nats-*"},

		{"occurred_at empty", nil, func(r *envelope.Row) { r.OccurredAt = "" }, "occurred_at"},
		{"occurred_at garbage", nil, func(r *envelope.Row) { r.OccurredAt = "yesterday" }, "occurred_at"},

		{"over max payload", &envelope.Builder{Subjects: envelope.Subjects{App: "shop", Dest: "billing"}, MaxPayload: 100},
			func(r *envelope.Row) {}, "max_payload"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			if b == nil {
				b = newBuilder()
			}
			r := newRow()
			tt.mutate(r)
			assertRowError(t, b, r, tt.reason)
		})
	}
}

// Errors no row can get past are not *RowError: the relay must stop, not
// dead-letter every event.
func TestBuildConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    *envelope.Builder
		pos  envelope.Position
	}{
		{"no app", &envelope.Builder{Subjects: envelope.Subjects{Dest: "billing"}}, testPos},
		{"bad app", &envelope.Builder{Subjects: envelope.Subjects{App: "a.b", Dest: "billing"}}, testPos},
		{"bad dest", &envelope.Builder{Subjects: envelope.Subjects{App: "shop", Dest: "b c"}}, testPos},
		{"bad env", &envelope.Builder{Subjects: envelope.Subjects{Env: "*", App: "shop", Dest: "billing"}}, testPos},
		{"negative tx index", newBuilder(), envelope.Position{CommitLSN: 0x16B374D848, TxIndex: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.b.Build(newRow(), tt.pos)
			var re *envelope.RowError
			if err == nil || errors.As(err, &re) {
				t.Fatalf("Build: err=%v, want a non-RowError error", err)
			}
		})
	}
}

func TestBuildMaxPayload(t *testing.T) {
	r := newRow()
	r.Headers = []byte(`{"X-Tenant":"acme"}`)
	r.TraceID = testTraceparent
	m := MustBuild(t, newBuilder(), r, testPos)

	// NATS counts the header block and the body against max_payload.
	size := len("NATS/1.0\r\n") + len("\r\n") + len(m.Body)
	for k, vs := range m.Header {
		for _, v := range vs {
			size += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	b := newBuilder()
	b.MaxPayload = size
	if _, err := b.Build(r, testPos); err != nil {
		t.Fatalf("Build at exactly max_payload: %v", err)
	}
	b.MaxPayload = size - 1
	assertRowError(t, b, r, "max_payload")
}

func TestRowErrorMessage(t *testing.T) {
	err := error(&envelope.RowError{EventID: "e1", Reason: "event_type is empty"})
	if got, want := err.Error(), `outbox event "e1": event_type is empty`; got != want {
		t.Fatalf("Error()=%q, want %q", got, want)
	}
}

// Build must not keep references to the row's buffers: the WAL decoder
// reuses them.
func TestBuildDoesNotAliasRow(t *testing.T) {
	r := newRow()
	r.Headers = []byte(`{"X-Tenant":"acme"}`)
	m := MustBuild(t, newBuilder(), r, testPos)
	body := string(m.Body)
	for i := range r.Payload {
		r.Payload[i] = 'x'
	}
	for i := range r.Headers {
		r.Headers[i] = 'x'
	}
	if string(m.Body) != body {
		t.Fatalf("body changed with the row's payload buffer")
	}
	if got, want := m.Header.Get("X-Tenant"), "acme"; got != want {
		t.Fatalf("X-Tenant=%q after the row's headers buffer changed, want %q", got, want)
	}
}

// buildBoth builds r as it is and with PayloadJSONB set, the fast path the
// relay takes for a jsonb payload column.
func buildBoth(t *testing.T, r *envelope.Row) (untrusted, trusted envelope.Message, errU, errT error) {
	t.Helper()
	u, tr := *r, *r
	u.PayloadJSONB, tr.PayloadJSONB = false, true
	b := newBuilder()
	untrusted, errU = b.Build(&u, testPos)
	trusted, errT = b.Build(&tr, testPos)
	return untrusted, trusted, errU, errT
}

// A payload Postgres printed from jsonb and a row with a resource_id skip
// the payload scan; the message must not change.
func TestBuildJSONBPayloadSameMessage(t *testing.T) {
	deep := func(levels int) string { return strings.Repeat("[", levels) + strings.Repeat("]", levels) }
	for _, tt := range []struct{ name, resourceID, payload string }{
		{"object", "42", `{"id": 42, "email": "ada@example.com"}`},
		{"empty object", "42", `{}`},
		{"nested", "42", `{"a": {"b": [1, 2.5, true, null, {"c": "d\"e"}]}, "id": "x"}`},
		{"escapes and unicode", "42", `{"k": "\u0001 é \\ \" \n", "é": 1}`},
		{"array", "42", `[{"id": 5}, 1, "x"]`},
		{"empty array", "42", `[]`},
		{"surrounding space", "42", " \n{\"a\": 1}\t "},
		{"deepest accepted", "42", deep(8999)},
		// No resource_id: the scan still runs and finds the fallback id.
		{"fallback id", "", `{"id": 184467, "name": "Ada"}`},
		{"fallback resource_id", "", `{"resource_id": "r-9"}`},
		{"fallback none", "", `{"name": "Ada"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRow()
			r.ResourceID, r.Payload = tt.resourceID, []byte(tt.payload)
			u, tr, errU, errT := buildBoth(t, r)
			if errU != nil || errT != nil {
				t.Fatalf("Build: untrusted %v, jsonb %v", errU, errT)
			}
			if !bytes.Equal(u.Body, tr.Body) {
				t.Fatalf("body differs:\nuntrusted %s\njsonb     %s", u.Body, tr.Body)
			}
			if !reflect.DeepEqual(u.Header, tr.Header) || u.Subject != tr.Subject || u.MsgID != tr.MsgID {
				t.Fatalf("message differs:\nuntrusted %v %s %s\njsonb     %v %s %s",
					u.Header, u.Subject, u.MsgID, tr.Header, tr.Subject, tr.MsgID)
			}
		})
	}
	r := newRow()
	r.ResourceID, r.Payload, r.PayloadJSONB = "", []byte(`{"id": 184467}`), true
	if _, f := decodeBody(t, MustBuild(t, newBuilder(), r, testPos).Body); str(t, f["resource_id"]) != "184467" {
		t.Fatalf("resource_id=%s, want the payload's id", f["resource_id"])
	}
}

// What Postgres does not check for us fails on the fast path with the same
// reason as without it.
func TestBuildJSONBPayloadSameErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		payload []byte
		reason  string
	}{
		{"NULL", nil, "payload is NULL"},
		{"empty", []byte{}, "payload is empty"},
		{"spaces", []byte(" \n"), "payload is empty"},
		{"json null", []byte(`null`), "payload must be a JSON object or array"},
		{"string", []byte(`"x"`), "payload must be a JSON object or array"},
		{"number", []byte(`42`), "payload must be a JSON object or array"},
		{"negative number", []byte(`-1.5`), "payload must be a JSON object or array"},
		{"boolean", []byte(`true`), "payload must be a JSON object or array"},
		// Valid JSON, and jsonb may hold it, but nested deeper than the
		// envelope allows: long values are still scanned.
		{"too deep", []byte(strings.Repeat("[", 9000) + strings.Repeat("]", 9000)), "payload is not valid JSON"},
		{"too deep object", []byte(strings.Repeat(`{"a":`, 9000) + "1" + strings.Repeat("}", 9000)), "payload is not valid JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRow()
			r.Payload = tt.payload
			_, _, errU, errT := buildBoth(t, r)
			var reU, reT *envelope.RowError
			if !errors.As(errU, &reU) || !errors.As(errT, &reT) {
				t.Fatalf("untrusted %v, jsonb %v: want *RowError from both", errU, errT)
			}
			if reU.Reason != tt.reason || *reT != *reU {
				t.Fatalf("untrusted %+v, jsonb %+v, want reason %q from both", reU, reT, tt.reason)
			}
		})
	}
}

// The fast path trusts Postgres: it does not scan a short jsonb payload. This
// is why only the WAL decoder sets PayloadJSONB, from the column's type.
func TestBuildJSONBPayloadNotScanned(t *testing.T) {
	r := newRow()
	r.Payload = []byte(`{"a":}`)
	assertRowError(t, newBuilder(), r, "valid JSON")
	r.PayloadJSONB = true
	if _, err := newBuilder().Build(r, testPos); err != nil {
		t.Fatalf("jsonb payload scanned: %v", err)
	}
	r.ResourceID = "" // the fallback needs the scan
	assertRowError(t, newBuilder(), r, "valid JSON")
}

// TestBuildIntoReusesStorage builds rows with different headers into one
// Message in turn: each result equals Build's (no header of an earlier row
// left behind), and once the storage is large enough nothing is allocated.
func TestBuildIntoReusesStorage(t *testing.T) {
	b := newBuilder()
	many := newRow()
	many.Headers = []byte(`{"X-Tenant":"acme","X-Region":"eu","X-Try":3,"X-Flag":true,"X-Skip":null}`)
	many.TraceID = testTraceparent
	none := newRow()
	none.EventID = "1c9e4f2a-0000-4000-8000-000000000001"
	none.Payload = []byte(`{"id": 7, "note": "a longer payload than the first row's, so that the body grows"}`)
	other := newRow()
	other.Headers = []byte(`{"X-Other":"1"}`)
	other.Subject = "custom.subject"

	var dst envelope.Message
	for i, r := range []*envelope.Row{many, none, other, many, none} {
		want := MustBuild(t, b, r, testPos)
		if err := b.BuildInto(&dst, r, testPos); err != nil {
			t.Fatalf("row %d: BuildInto: %v", i, err)
		}
		if !bytes.Equal(dst.Body, want.Body) || !reflect.DeepEqual(dst.Header, want.Header) ||
			dst.Subject != want.Subject || dst.MsgID != want.MsgID {
			t.Fatalf("row %d: BuildInto gave\n%s %v %s\nBuild gave\n%s %v %s", i,
				dst.Body, dst.Header, dst.Subject, want.Body, want.Header, want.Subject)
		}
	}

	bad := newRow()
	bad.EventType = ""
	if err := b.BuildInto(&dst, bad, testPos); err == nil {
		t.Fatal("BuildInto accepted a row without event_type")
	}
	if dst.Subject != "" || dst.MsgID != "" {
		t.Fatalf("after an error dst still looks publishable: subject %q, msg id %q", dst.Subject, dst.MsgID)
	}

	// Rows without headers of their own (a row's headers take one copy).
	plain := newRow()
	plain.Subject = "custom.subject"
	allocs := testing.AllocsPerRun(100, func() {
		for _, r := range []*envelope.Row{none, plain} {
			if err := b.BuildInto(&dst, r, testPos); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("BuildInto with reused storage: %.1f allocations per 2 rows, want 0", allocs)
	}
}
