package audit

import (
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{"all", time.Time{}, false},
		{"2026-01-02T15:04:05Z", time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), false},
		{"2026-01-02T15:04:05.5+01:00", time.Date(2026, 1, 2, 14, 4, 5, 5e8, time.UTC), false},
		{"1h", now.Add(-time.Hour), false},
		{"90m", now.Add(-90 * time.Minute), false},
		{"", time.Time{}, true},
		{"yesterday", time.Time{}, true},
		{"-1h", time.Time{}, true},
		{"0s", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSince(tt.in, now)
		if (err != nil) != tt.wantErr || !got.Equal(tt.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.sync.>", "a.sync.b", true},
		{"a.sync.>", "a.sync.b.c", true},
		{"a.sync.>", "a.sync", false},
		{"a.sync.>", "b.sync.a", false},
		{"prod.a.sync.>", "a.sync.b", false},
		{"a.*.b", "a.x.b", true},
		{"a.*.b", "a.x.c", false},
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
	}
	for _, tt := range tests {
		if got := covers(tt.pattern, tt.subject); got != tt.want {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
		}
	}
}
