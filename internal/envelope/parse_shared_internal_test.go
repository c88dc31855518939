package envelope

import (
	"reflect"
	"strings"
	"testing"
)

// TestParseSharedMatchesParse: ParseShared gives what Parse gives, small
// bodies and large (text fields copied one by one), escapes and numbers
// included, with a payload that is a slice of the body.
func TestParseSharedMatchesParse(t *testing.T) {
	big := strings.Repeat("y", 3*sharedCopyAbove)
	for _, body := range []string{
		`{"event_id":"e1","event_type":"t","resource_type":"u","resource_id":42,"payload":{"a":1}}`,
		`{"event_id":"e\u00e92","event_type":"t","producer":"p","resource_id":"r\"1","occurred_at":"2026","trace_id":null,"payload":{"b":"` + big + `"}}`,
		`{"payload":["` + big + `"],"event_id":"e3","event_type":"t\\n","resource_type":"u","resource_id":-7,"schema_version":1}`,
	} {
		want, err := Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		raw := []byte(body)
		got, err := ParseShared(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseShared(%.60q) = %+v, want %+v", body, got, want)
		}
		if off := offsetIn(raw, got.Payload); off < 0 || off+len(got.Payload) > len(raw) || &raw[off] != &got.Payload[0] {
			t.Errorf("ParseShared(%.60q): payload is not a slice of the body", body)
		}
	}
}
