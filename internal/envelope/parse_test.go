package envelope_test

import (
	"errors"
	"github.com/jackc/pglogrepl"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

func TestParseRoundTrip(t *testing.T) {
	r := newRow()
	r.EventType = "user.created"
	r.ResourceType = ""
	r.ResourceID = ""
	r.Payload = []byte(`{"id":"u-1","name":"Ada \"the\" first\n"}`)
	m := MustBuild(t, newBuilder(), r, testPos)

	env, err := envelope.Parse(m.Body)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := envelope.Envelope{
		EventID:       testEventID,
		EventType:     "user.created",
		Producer:      "shop",
		ResourceType:  "user",
		ResourceID:    "u-1",
		OccurredAt:    "2026-11-24T15:08:12.123456Z",
		TraceID:       "abc123",
		SchemaVersion: 1,
		Payload:       []byte(`{"id":"u-1","name":"Ada \"the\" first\n"}`),
	}
	assertEnvelope(t, env, &want)
}

func assertEnvelope(tb testing.TB, got, want *envelope.Envelope) {
	tb.Helper()
	for _, f := range []struct{ name, got, want string }{
		{"EventID", got.EventID, want.EventID},
		{"EventType", got.EventType, want.EventType},
		{"Producer", got.Producer, want.Producer},
		{"ResourceType", got.ResourceType, want.ResourceType},
		{"ResourceID", got.ResourceID, want.ResourceID},
		{"OccurredAt", got.OccurredAt, want.OccurredAt},
		{"TraceID", got.TraceID, want.TraceID},
		{"Payload", string(got.Payload), string(want.Payload)},
	} {
		if f.got != f.want {
			tb.Errorf("%s=%q, want %q", f.name, f.got, f.want)
		}
	}
	if got.SchemaVersion != want.SchemaVersion {
		tb.Errorf("SchemaVersion=%d, want %d", got.SchemaVersion, want.SchemaVersion)
	}
}

func TestParseGood(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
		want envelope.Envelope
	}{
		{
			// Pretty-printed, in the order of the gem's README.
			name: "gem readme",
			body: `{
  "event_id":       "01H1234567890ABCDEF",
  "schema_version": 1,
  "event_type":     "created",
  "producer":       "myapp",
  "resource_type":  "user",
  "resource_id":    "01H1234567890ABCDEF",
  "occurred_at":    "2025-08-13T21:00:00Z",
  "trace_id":       "abc123",
  "payload":        { "id": "01H...", "name": "Ada" }
}`,
			want: envelope.Envelope{EventID: "01H1234567890ABCDEF", EventType: "created", Producer: "myapp",
				ResourceType: "user", ResourceID: "01H1234567890ABCDEF", OccurredAt: "2025-08-13T21:00:00Z",
				TraceID: "abc123", SchemaVersion: 1, Payload: []byte(`{ "id": "01H...", "name": "Ada" }`)},
		},
		{
			// The gem's older Publisher#build_envelope order, as JSON.generate writes it.
			name: "gem publisher order",
			body: `{"event_id":"6f1c","schema_version":1,"event_type":"user.created","producer":"pwas","resource_id":"17",` +
				`"occurred_at":"2025-08-13T21:00:00+00:00","trace_id":"9f86d081884c7d65","resource_type":"user","payload":{"id":17}}`,
			want: envelope.Envelope{EventID: "6f1c", EventType: "user.created", Producer: "pwas", ResourceType: "user",
				ResourceID: "17", OccurredAt: "2025-08-13T21:00:00+00:00", TraceID: "9f86d081884c7d65", SchemaVersion: 1,
				Payload: []byte(`{"id":17}`)},
		},
		{
			name: "numeric resource_id, no schema_version, extra fields, null trace",
			body: `{"event_id":"e1","event_type":"updated","resource_id":12345678901234567890,"trace_id":null,` +
				`"extra":{"deep":[1,2,{"x":null}]},"payload":[1,2]}`,
			want: envelope.Envelope{EventID: "e1", EventType: "updated", ResourceID: "12345678901234567890",
				SchemaVersion: 1, Payload: []byte(`[1,2]`)},
		},
		{
			name: "schema_version 2",
			body: `{"event_id":"e1","event_type":"t","schema_version":2,"payload":{}}`,
			want: envelope.Envelope{EventID: "e1", EventType: "t", SchemaVersion: 2, Payload: []byte(`{}`)},
		},
		{
			name: "schema_version 1.0",
			body: `{"event_id":"e1","event_type":"t","schema_version":1.0,"payload":{}}`,
			want: envelope.Envelope{EventID: "e1", EventType: "t", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
		{
			name: "schema_version null",
			body: `{"event_id":"e1","event_type":"t","schema_version":null,"payload":{}}`,
			want: envelope.Envelope{EventID: "e1", EventType: "t", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
		{
			name: "numeric event_id",
			body: `{"event_id":42,"event_type":"t","payload":{}}`,
			want: envelope.Envelope{EventID: "42", EventType: "t", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
		{
			name: "escapes",
			body: `{"event_id":"e\u0031","event_type":"a\"b\\c\n\u00e9\ud83d\ude80","payload":{}}`,
			want: envelope.Envelope{EventID: "e1", EventType: "a\"b\\c\né🚀", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
		{
			name: "lone surrogate becomes U+FFFD",
			body: `{"event_id":"e1","event_type":"\ud800x","payload":{}}`,
			want: envelope.Envelope{EventID: "e1", EventType: "\ufffdx", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
		{
			name: "escaped key",
			body: `{"event_\u0069d":"e1","event_type":"t","payload":{}}`,
			want: envelope.Envelope{EventID: "e1", EventType: "t", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
		{
			name: "duplicate key last wins",
			body: `{"event_id":"old","event_id":"new","event_type":"t","payload":{}}`,
			want: envelope.Envelope{EventID: "new", EventType: "t", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
		{
			name: "surrounding whitespace",
			body: " \r\n\t{\"event_id\":\"e1\",\"event_type\":\"t\",\"payload\":{}} \n",
			want: envelope.Envelope{EventID: "e1", EventType: "t", SchemaVersion: 1, Payload: []byte(`{}`)},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, err := envelope.Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			assertEnvelope(t, env, &tt.want)
		})
	}
}

func TestParseBad(t *testing.T) {
	for _, tt := range []struct{ name, body, reason string }{
		{"nil", "", "empty body"},
		{"spaces", " \n ", "empty body"},
		{"not json", "nope", "not valid JSON"},
		{"array", `[1]`, "not an object"},
		{"string", `"x"`, "not an object"},
		{"null", `null`, "not an object"},
		{"truncated", `{"event_id":"a"`, "not valid JSON"},
		{"trailing", `{"event_id":"e1","event_type":"t","payload":{}} {}`, "not valid JSON"},
		{"trailing comma", `{"event_id":"e1","event_type":"t","payload":{},}`, "not valid JSON"},
		{"single quotes", `{'event_id':'e1'}`, "not valid JSON"},
		{"raw newline in string", "{\"event_id\":\"e\n1\",\"event_type\":\"t\",\"payload\":{}}", "not valid JSON"},
		{"bad escape", `{"event_id":"e\x1","event_type":"t","payload":{}}`, "not valid JSON"},
		{"too deep", `{"event_id":"e1","event_type":"t","payload":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`, "not valid JSON"},
		{"empty object", `{}`, "missing payload"},
		{"missing event_id", `{"event_type":"t","payload":{}}`, "missing event_id"},
		{"empty event_id", `{"event_id":"","event_type":"t","payload":{}}`, "missing event_id"},
		{"null event_id", `{"event_id":null,"event_type":"t","payload":{}}`, "missing event_id"},
		{"object event_id", `{"event_id":{},"event_type":"t","payload":{}}`, "event_id must be a string"},
		{"bool event_type", `{"event_id":"e1","event_type":true,"payload":{}}`, "event_type must be a string"},
		{"missing event_type", `{"event_id":"e1","payload":{}}`, "missing event_type"},
		{"empty event_type", `{"event_id":"e1","event_type":"","payload":{}}`, "missing event_type"},
		{"array trace_id", `{"event_id":"e1","event_type":"t","trace_id":[],"payload":{}}`, "trace_id must be a string"},
		{"missing payload", `{"event_id":"e1","event_type":"t"}`, "missing payload"},
		{"null payload", `{"event_id":"e1","event_type":"t","payload":null}`, "object or array"},
		{"string payload", `{"event_id":"e1","event_type":"t","payload":"{}"}`, "object or array"},
		{"number payload", `{"event_id":"e1","event_type":"t","payload":5}`, "object or array"},
		{"string schema_version", `{"event_id":"e1","event_type":"t","schema_version":"1","payload":{}}`, "schema_version"},
		{"fractional schema_version", `{"event_id":"e1","event_type":"t","schema_version":1.5,"payload":{}}`, "schema_version"},
		{"huge schema_version", `{"event_id":"e1","event_type":"t","schema_version":1e300,"payload":{}}`, "schema_version"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env, err := envelope.Parse([]byte(tt.body))
			if err == nil {
				t.Fatalf("Parse=%+v, want error", env)
			}
			if !errors.Is(err, envelope.ErrInvalid) {
				t.Errorf("Parse error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Parse error %q, want it to mention %q", err, tt.reason)
			}
		})
	}
}

// The envelope must not change when the caller reuses the body buffer.
func TestParseDoesNotAliasBody(t *testing.T) {
	body := []byte(`{"event_id":"e1","event_type":"t","payload":{"a":1}}`)
	env, err := envelope.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'x'
	}
	assertEnvelope(t, env, &envelope.Envelope{EventID: "e1", EventType: "t", SchemaVersion: 1, Payload: []byte(`{"a":1}`)})
}

func TestParsePosition(t *testing.T) {
	for _, tt := range []struct {
		name     string
		lsn, idx string
		want     envelope.Position
		ok       bool
	}{
		{"ok", "16/B374D848", "3", envelope.Position{CommitLSN: 0x16B374D848, TxIndex: 3}, true},
		{"ok zero", "0/0", "0", envelope.Position{CommitLSN: 0, TxIndex: 0}, true},
		{"ok lowercase", "ffffffff/ffffffff", "123456789", envelope.Position{CommitLSN: 0xFFFFFFFFFFFFFFFF, TxIndex: 123456789}, true},
		{"absent", "", "", envelope.Position{}, false},
		{"no index", "16/B374D848", "", envelope.Position{}, false},
		{"no lsn", "", "3", envelope.Position{}, false},
		{"no slash", "16B374D848", "3", envelope.Position{}, false},
		{"empty half", "/1", "3", envelope.Position{}, false},
		{"long half", "123456789/1", "3", envelope.Position{}, false},
		{"not hex", "16/XYZ", "3", envelope.Position{}, false},
		{"negative index", "16/B374D848", "-1", envelope.Position{}, false},
		{"signed index", "16/B374D848", "+1", envelope.Position{}, false},
		{"junk index", "16/B374D848", "1a", envelope.Position{}, false},
		{"huge index", "16/B374D848", "99999999999", envelope.Position{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := nats.Header{}
			if tt.lsn != "" {
				h.Set(envelope.HeaderCommitLSN, tt.lsn)
			}
			if tt.idx != "" {
				h.Set(envelope.HeaderTxIndex, tt.idx)
			}
			got, ok := envelope.ParsePosition(h)
			if ok != tt.ok || got != tt.want {
				t.Fatalf("ParsePosition=%+v,%v, want %+v,%v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if _, ok := envelope.ParsePosition(nil); ok {
		t.Fatal("ParsePosition(nil) ok")
	}
}

func TestParsePositionOfBuild(t *testing.T) {
	m := MustBuild(t, newBuilder(), newRow(), testPos)
	got, ok := envelope.ParsePosition(m.Header)
	if !ok || got != testPos {
		t.Fatalf("ParsePosition=%+v,%v, want %+v", got, ok, testPos)
	}
}

func TestPositionCompare(t *testing.T) {
	p := func(lsn string, i int) envelope.Position {
		l, err := pglogrepl.ParseLSN(lsn)
		if err != nil {
			t.Fatal(err)
		}
		return envelope.Position{CommitLSN: l, TxIndex: i}
	}
	for _, tt := range []struct {
		a, b envelope.Position
		want int
	}{
		{p("16/B374D848", 0), p("16/B374D848", 0), 0},
		{p("16/B374D848", 0), p("16/B374D848", 1), -1},
		{p("16/B374D849", 0), p("16/B374D848", 9), 1},
		{p("9/FFFFFFFF", 5), p("A/0", 0), -1}, // numeric, not text, order
		{p("0/A", 0), p("0/9", 0), 1},
		{p("0/a", 0), p("0/A", 0), 0},
	} {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%v.Compare(%v)=%d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%v.Compare(%v)=%d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
	if got, want := p("16/B374D848", 3).String(), "16/B374D848#3"; got != want {
		t.Errorf("String()=%q, want %q", got, want)
	}
}
