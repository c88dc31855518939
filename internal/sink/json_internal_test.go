package sink

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uo\te`, "nul\x00", "bad\xff\xfe", "ctl\x01\x1f", "ünïcode ✓", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendJSONString(%q)=%s: not valid JSON: %v", s, b, err)
		}
		want := strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
		if utf8.ValidString(s) {
			want = strings.ReplaceAll(s, "\x00", "\uFFFD")
		}
		// Each invalid byte may become its own U+FFFD; compare without them.
		if strings.ReplaceAll(got, "\uFFFD", "") != strings.ReplaceAll(want, "\uFFFD", "") {
			t.Fatalf("appendJSONString(%q) decodes to %q, want %q", s, got, want)
		}
	})
}

func TestTruncate(t *testing.T) {
	if got := truncate("héllo", 2); got != "h" {
		t.Fatalf("truncate cut inside a rune: %q", got)
	}
	if got := truncate("a\x00b\xff", 10); got != "a\uFFFDb\uFFFD" {
		t.Fatalf("truncate did not clean: %q", got)
	}
}
