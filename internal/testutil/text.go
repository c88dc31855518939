package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// NewUUID returns a random version 4 UUID.
func NewUUID() string {
	var b [16]byte
	rand.Read(b[:])
	return FormatUUID(b)
}

// FormatUUID marks b as a version 4 UUID and formats it (8-4-4-4-12 hex);
// tests that need reproducible ids fill b from a seeded source.
func FormatUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// Tail returns the last n lines of s, for a process log in a failure message.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
