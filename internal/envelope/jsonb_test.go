package envelope_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// FuzzAppendJSONBString: always valid JSON that jsonb accepts (no \u0000),
// decoding to s with NUL and invalid UTF-8 replaced by U+FFFD.
func FuzzAppendJSONBString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uo\te`, "nul\x00", "bad\xff\xfe", "ctl\x01\x1f", "ünïcode ✓", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := envelope.AppendJSONBString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("AppendJSONBString(%q)=%s: not valid JSON: %v", s, b, err)
		}
		want := strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
		if utf8.ValidString(s) {
			want = strings.ReplaceAll(s, "\x00", "\uFFFD")
		}
		// Each invalid byte may become its own U+FFFD; compare without them.
		if strings.ReplaceAll(got, "\uFFFD", "") != strings.ReplaceAll(want, "\uFFFD", "") {
			t.Fatalf("AppendJSONBString(%q) decodes to %q, want %q", s, got, want)
		}
	})
}
