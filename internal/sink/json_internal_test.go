package sink

import "testing"

func TestTruncate(t *testing.T) {
	if got := truncate("héllo", 2); got != "h" {
		t.Fatalf("truncate cut inside a rune: %q", got)
	}
	if got := truncate("a\x00b\xff", 10); got != "a\uFFFDb\uFFFD" {
		t.Fatalf("truncate did not clean: %q", got)
	}
}
