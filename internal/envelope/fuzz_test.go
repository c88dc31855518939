package envelope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// jsonRoundTrip is what encoding/json makes of s: the reference for how a
// string survives being written into and read out of an envelope.
func jsonRoundTrip(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

func FuzzBuild(f *testing.F) {
	f.Add(testEventID, "user", "42", "created", []byte(`{"id": 42, "email": "ada@example.com"}`), []byte(`{}`),
		"", "", "abc123", "2026-11-24 15:08:12.123456+00", uint16(3))
	f.Add("e1", "", "", "user.created", []byte(`{"id":"u\"1","x":[1,{"y":null}]}`), []byte(`{"X-Tenant":"acme","X-N":3}`),
		"custom.subject", "", testTraceparent, "2026-11-24 15:08:12+05:30", uint16(0))
	f.Add("e2", "order", "", "paid", []byte(`[1,2,3]`), []byte(`{"traceparent":"`+testTraceparent+`"}`),
		"", "audit", "", "1900-01-01 00:00:00+00:53:28", uint16(65535))
	f.Add("e3", "t\x00\xff", "\u2028", "\"\\", []byte(` {"\u0069d":1e5} `), []byte(`null`),
		"", "", "\n", "2026-11-24T15:08:12Z", uint16(1))
	f.Add("", "", "", "", []byte(nil), []byte(`[`), "a..b", "dlq", "", "infinity", uint16(9))
	f.Add("e4", "x", "", "y", []byte(`{"a":}`), []byte(`{"Nats-Msg-Id":"x"}`), "", "", "", "2026-02-30 00:00:00+00", uint16(2))

	b := &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{Env: "prod", App: "shop", Dest: "billing"}, MaxPayload: 1 << 20}
	var reused envelope.Message // carries the storage of earlier inputs into BuildInto
	f.Fuzz(func(t *testing.T, eventID, resourceType, resourceID, eventType string, payload, headers []byte,
		subject, destination, traceID, occurredAt string, txIndex uint16) {
		r := &envelope.Row{
			EventID: eventID, ResourceType: resourceType, ResourceID: resourceID, EventType: eventType,
			Payload: payload, Headers: headers, Subject: subject, Destination: destination,
			TraceID: traceID, OccurredAt: occurredAt,
		}
		pos := envelope.Position{CommitLSN: 0x16B374D848, TxIndex: int(txIndex)}
		m, err := b.Build(r, pos)
		// Reused storage must give the same message or the same error.
		erri := b.BuildInto(&reused, r, pos)
		if fmt.Sprint(erri) != fmt.Sprint(err) {
			t.Fatalf("BuildInto: %v, Build: %v", erri, err)
		}
		if err == nil && (!bytes.Equal(reused.Body, m.Body) || !reflect.DeepEqual(reused.Header, m.Header) ||
			reused.Subject != m.Subject || reused.MsgID != m.MsgID) {
			t.Fatalf("BuildInto into reused storage differs:\n%q %v\n%q %v", reused.Body, reused.Header, m.Body, m.Header)
		}
		if json.Valid(payload) {
			// Any valid JSON could have come from a jsonb column: the fast
			// path must give the same message or the same error.
			j := *r
			j.PayloadJSONB = true
			mj, errj := b.Build(&j, pos)
			if fmt.Sprint(errj) != fmt.Sprint(err) || !bytes.Equal(mj.Body, m.Body) || !reflect.DeepEqual(mj.Header, m.Header) ||
				mj.Subject != m.Subject || mj.MsgID != m.MsgID {
				t.Fatalf("PayloadJSONB changes Build:\n%v %q %v\n%v %q %v", err, m.Body, m.Header, errj, mj.Body, mj.Header)
			}
		}
		if err != nil {
			var re *envelope.RowError
			if !errors.As(err, &re) {
				t.Fatalf("Build: %v is not a *RowError", err)
			}
			if re.EventID != eventID || re.Reason == "" {
				t.Fatalf("RowError %+v", re)
			}
			return
		}
		if !json.Valid(m.Body) {
			t.Fatalf("body is not valid JSON: %q", m.Body)
		}
		if utf8.Valid(payload) && !utf8.Valid(m.Body) {
			t.Fatalf("body is not valid UTF-8: %q", m.Body)
		}
		if err := envelope.ValidatePublishSubject(m.Subject); err != nil {
			t.Fatalf("subject %q: %v", m.Subject, err)
		}
		for k, vs := range m.Header {
			if k == "" || strings.ContainsAny(k, "\r\n: ") {
				t.Fatalf("bad header name %q", k)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n") {
					t.Fatalf("header %s has CR/LF: %q", k, v)
				}
			}
		}
		if got := m.Header.Get(envelope.HeaderMsgID); got != eventID || m.MsgID != eventID {
			t.Fatalf("Nats-Msg-Id=%q MsgID=%q, want %q", got, m.MsgID, eventID)
		}
		if p, ok := envelope.ParsePosition(m.Header); !ok || p != pos {
			t.Fatalf("ParsePosition=%+v,%v, want %+v", p, ok, pos)
		}

		env, err := envelope.Parse(m.Body)
		if err != nil {
			t.Fatalf("Parse(Build()): %v\n%s", err, m.Body)
		}
		if env.EventID != eventID {
			t.Fatalf("event_id %q, want %q", env.EventID, eventID)
		}
		if want := jsonRoundTrip(eventType); env.EventType != want {
			t.Fatalf("event_type %q, want %q", env.EventType, want)
		}
		if want := bytes.Trim(payload, " \t\r\n"); !bytes.Equal(env.Payload, want) {
			t.Fatalf("payload %q, want %q", env.Payload, want)
		}
		if resourceID != "" && env.ResourceID != jsonRoundTrip(resourceID) {
			t.Fatalf("resource_id %q, want %q", env.ResourceID, jsonRoundTrip(resourceID))
		}
		if env.SchemaVersion != 1 {
			t.Fatalf("schema_version %d", env.SchemaVersion)
		}
		// encoding/json must read the same envelope.
		var ref struct {
			EventID   string          `json:"event_id"`
			EventType string          `json:"event_type"`
			Payload   json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(m.Body, &ref); err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		if ref.EventID != env.EventID || ref.EventType != env.EventType || !bytes.Equal(ref.Payload, env.Payload) {
			t.Fatalf("encoding/json reads %+v, Parse %+v", ref, env)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		``,
		`{}`,
		`{"event_id":"e1","event_type":"t","payload":{}}`,
		`{"event_id":"e1","schema_version":1,"event_type":"created","producer":"p","resource_type":"user","resource_id":42,` +
			`"occurred_at":"2025-08-13T21:00:00Z","trace_id":"abc123","payload":{"id":42}}`,
		`{"event_\u0069d":"\ud83d\ude80","event_type":"\ud800","payload":[]}`,
		`{"event_id":"e1","event_type":"t","schema_version":1e2,"payload":{}}`,
		`[1,2]`,
		`{"a":`,
		"{\"event_id\":\"\xff\",\"event_type\":\"t\",\"payload\":{}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := envelope.Parse(body)
		if err != nil {
			if !errors.Is(err, envelope.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Parse accepted invalid JSON %q", body)
		}
		if env.EventID == "" || env.EventType == "" {
			t.Fatalf("accepted without event_id/event_type: %+v", env)
		}
		if len(env.Payload) == 0 || (env.Payload[0] != '{' && env.Payload[0] != '[') || !json.Valid(env.Payload) {
			t.Fatalf("payload %q", env.Payload)
		}
		// Compare with encoding/json where both read the same thing: exact
		// keys (a map keeps them exact, the last duplicate wins) and
		// string values.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		for key, got := range map[string]string{"event_id": env.EventID, "event_type": env.EventType, "producer": env.Producer} {
			raw, ok := m[key]
			if !ok || raw[0] != '"' {
				continue
			}
			var want string
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("%s: Parse %q, encoding/json %q", key, got, want)
			}
		}
		if !bytes.Equal(m["payload"], env.Payload) {
			t.Fatalf("payload: Parse %q, encoding/json %q", env.Payload, m["payload"])
		}
	})
}

func FuzzValidateSubject(f *testing.F) {
	for _, s := range []string{"shop.sync.billing", "a.*", "a.>", ">", "a..b", "a b", "", ".", "a.\xff", "café.x", "a.b*c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pubErr := envelope.ValidatePublishSubject(s)
		filtErr := envelope.ValidateFilterSubject(s)
		if pubErr == nil && filtErr != nil {
			t.Fatalf("%q: valid publish subject but invalid filter: %v", s, filtErr)
		}
		if pubErr == nil {
			if len(s) == 0 || len(s) > envelope.MaxSubjectLen || !utf8.ValidString(s) ||
				strings.ContainsAny(s, "*> \t\r\n") {
				t.Fatalf("%q accepted as a publish subject", s)
			}
			for _, tok := range strings.Split(s, ".") {
				if tok == "" {
					t.Fatalf("%q accepted with an empty token", s)
				}
				// Each token is valid as a configured name too (short enough
				// that {app}.sync.dlq stays within the subject limit).
				if len(tok) > envelope.MaxSubjectLen-len(".sync.dlq") {
					continue
				}
				if err := (envelope.Subjects{App: tok}).Validate(); err != nil {
					t.Fatalf("token %q of valid subject %q refused as APP_NAME: %v", tok, s, err)
				}
			}
		}
		if filtErr == nil {
			toks := strings.Split(s, ".")
			for i, tok := range toks {
				if strings.Contains(tok, ">") && (tok != ">" || i != len(toks)-1) {
					t.Fatalf("%q accepted as a filter with a misplaced '>'", s)
				}
				if strings.Contains(tok, "*") && tok != "*" {
					t.Fatalf("%q accepted as a filter with '*' inside a token", s)
				}
			}
		}
	})
}
