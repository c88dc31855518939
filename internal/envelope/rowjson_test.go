package envelope_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

func TestDecodeRowJSON(t *testing.T) {
	full := `{"headers": {"n": 5, "x-tenant": "t1"}, "payload": {"id": "u-1", "n": [1, 2.50]}, "subject": null, ` +
		`"event_id": "11111111-1111-4111-8111-111111111111", "trace_id": "abc", "event_type": "created", ` +
		`"destination": "app_c", "occurred_at": "2026-01-02T03:04:05.123456+05:30", "resource_id": "u-1", ` +
		`"resource_type": "us\"er\u00e9", "future_field": [1]}`
	for _, tc := range []struct {
		name, content string
		want          envelope.Row
		err           string
	}{
		{name: "every field", content: full, want: envelope.Row{
			EventID: "11111111-1111-4111-8111-111111111111", ResourceType: `us"eré`, ResourceID: "u-1", EventType: "created",
			Payload: []byte(`{"id": "u-1", "n": [1, 2.50]}`), PayloadJSONB: true, Headers: []byte(`{"n": 5, "x-tenant": "t1"}`),
			Destination: "app_c", TraceID: "abc", OccurredAt: "2026-01-02T03:04:05.123456+05:30",
		}},
		{name: "nulls and empty headers", content: `{"event_id":"e","event_type":"t","payload":null,"headers":{ },"resource_id":null}`,
			want: envelope.Row{EventID: "e", EventType: "t"}},
		{name: "array payload", content: ` {"event_id":"e","payload":[1]} `,
			want: envelope.Row{EventID: "e", Payload: []byte(`[1]`), PayloadJSONB: true}},
		{name: "not an object", content: `[1]`, err: "not a JSON object"},
		{name: "empty", content: ``, err: "not a JSON object"},
		{name: "text", content: `not json {`, err: "not a JSON object"},
		{name: "truncated", content: `{"event_id":"e"`, err: "not valid JSON"},
		{name: "bad payload", content: `{"event_id":"e","payload":{"a":}}`, err: "not valid JSON"},
		{name: "trailing data", content: `{"event_id":"e"} x`, err: "data after"},
		{name: "number as text field", content: `{"event_id":42}`, err: "event_id must be a string or null"},
		{name: "too deep", content: `{"payload":` + strings.Repeat("[", 9001) + strings.Repeat("]", 9001) + `}`, err: "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var row envelope.Row
			err := envelope.DecodeRowJSON([]byte(tc.content), &row)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err=%v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rowString(row), rowString(tc.want); got != want {
				t.Errorf("row\n got %s\nwant %s", got, want)
			}
		})
	}
}

func rowString(r envelope.Row) string {
	b, _ := json.Marshal(struct {
		envelope.Row
		P, H string
	}{r, string(r.Payload), string(r.Headers)})
	return string(b)
}

// FuzzDecodeRowJSON: whatever a logical decoding message carries, decoding
// does not panic, accepts only valid JSON, and a decoded row builds without
// panicking.
func FuzzDecodeRowJSON(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"e","event_type":"t","payload":{"id":1},"headers":{"a":"b"},"occurred_at":"2026-01-02T03:04:05Z"}`,
		`{"event_\u0069d":"\ud83d\ude80","payload":null,"headers":null,"subject":"a.b"}`,
		`{"payload":"x","headers":[1],"resource_id":1}`,
		"{\"event_id\":\"\xff\"}",
		`{`, `[]`, ``, `{"a":1} {}`,
	} {
		f.Add([]byte(s))
	}
	b := &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{Env: "prod", App: "shop", Dest: "billing"}}
	f.Fuzz(func(t *testing.T, content []byte) {
		var row envelope.Row
		if err := envelope.DecodeRowJSON(content, &row); err != nil {
			return
		}
		if !json.Valid(content) {
			t.Fatalf("accepted invalid JSON %q", content)
		}
		if row.PayloadJSONB && !json.Valid(row.Payload) {
			t.Fatalf("payload %q marked valid", row.Payload)
		}
		b.Build(&row, envelope.Position{CommitLSN: 1})
	})
}
