package envelope

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxSubjectLen bounds subjects we build or accept. NATS itself only limits
// the protocol line, but a subject this long is a bug in whatever produced it.
const MaxSubjectLen = 255

// dlqToken is the destination token of the DLQ subject, {app}.sync.dlq, so no
// destination may be called that.
const dlqToken = "dlq"

// Subjects builds subjects by the gem's conventions:
//
//	publish  [{env}.]{app}.sync.{dest}
//	filter   [{env}.]{dest}.sync.{app}   (the other side's publish subject)
//	DLQ      [{env}.]{app}.sync.dlq
type Subjects struct {
	Env  string // ENV_NAME, optional prefix
	App  string // APP_NAME
	Dest string // DESTINATION_APP, the default destination
}

// Publish returns the subject events for dest are published on; dest ""
// means s.Dest.
func (s Subjects) Publish(dest string) string {
	if dest == "" {
		dest = s.Dest
	}
	return s.join(s.App, dest)
}

// Filter returns the subject the sink consumes: what Dest publishes to App.
func (s Subjects) Filter() string { return s.join(s.Dest, s.App) }

// DLQ returns the dead-letter subject of App.
func (s Subjects) DLQ() string { return s.join(s.App, dlqToken) }

func (s Subjects) join(from, to string) string {
	if s.Env == "" {
		return from + ".sync." + to
	}
	return s.Env + "." + from + ".sync." + to
}

// Validate checks that each configured name is a single subject token.
// Dest may be empty (a relay whose rows all name their destination or
// subject), but not "dlq", which would publish into the DLQ.
func (s Subjects) Validate() error {
	if s.Env != "" {
		if err := validToken(s.Env); err != nil {
			return fmt.Errorf("ENV_NAME %q: %w", s.Env, err)
		}
	}
	if s.App == "" {
		return fmt.Errorf("APP_NAME is required")
	}
	if err := validToken(s.App); err != nil {
		return fmt.Errorf("APP_NAME %q: %w", s.App, err)
	}
	if s.Dest != "" {
		if err := validToken(s.Dest); err != nil {
			return fmt.Errorf("DESTINATION_APP %q: %w", s.Dest, err)
		}
		if s.Dest == dlqToken {
			return fmt.Errorf("DESTINATION_APP %q: reserved for the dead-letter subject {app}.sync.dlq", s.Dest)
		}
	}
	// The filter subject is as long as the publish subject.
	longest := s.DLQ()
	if s.Dest != "" && len(s.Publish("")) > len(longest) {
		longest = s.Publish("")
	}
	if len(longest) > MaxSubjectLen {
		return fmt.Errorf("ENV_NAME, APP_NAME and DESTINATION_APP make the %d-byte subject %q, over the %d-byte limit",
			len(longest), longest, MaxSubjectLen)
	}
	return nil
}

// validToken checks one subject token: non-empty, valid UTF-8, no
// whitespace or control characters, none of '.', '*', '>'.
func validToken(tok string) error {
	if tok == "" {
		return fmt.Errorf("must not be empty")
	}
	for i := 0; i < len(tok); {
		c := tok[i]
		if c < utf8.RuneSelf {
			switch {
			case c <= ' ' || c == 0x7f:
				return fmt.Errorf("must not contain whitespace or control characters (byte %d)", i)
			case c == '.':
				return fmt.Errorf("must be a single subject token, without '.'")
			case c == '*' || c == '>':
				return fmt.Errorf("must not contain the wildcard %q", c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(tok[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Errorf("must be valid UTF-8 (byte %d)", i)
		}
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("must not contain whitespace or control characters (byte %d)", i)
		}
		i += size
	}
	return nil
}

// ValidatePublishSubject checks a subject a message may be published on:
// non-empty tokens separated by '.', no whitespace or control characters, no
// wildcards, at most MaxSubjectLen bytes. The error names the bad token.
func ValidatePublishSubject(s string) error { return validateSubject(s, false) }

// ValidateFilterSubject checks a consumer filter subject: like a publish
// subject, but a token may be the wildcard '*', and the last token may be
// '>'. Wildcard characters inside a longer token are still refused.
func ValidateFilterSubject(s string) error { return validateSubject(s, true) }

func validateSubject(s string, filter bool) error {
	if s == "" {
		return fmt.Errorf("subject is empty")
	}
	if len(s) > MaxSubjectLen {
		return fmt.Errorf("subject is %d bytes, over the %d-byte limit", len(s), MaxSubjectLen)
	}
	n := 0
	for start := 0; start <= len(s); n++ {
		end := start
		for end < len(s) && s[end] != '.' {
			end++
		}
		tok := s[start:end]
		switch {
		case tok == "":
			return fmt.Errorf("subject %q: token %d is empty", s, n+1)
		case filter && tok == "*":
		case filter && tok == ">":
			if end != len(s) {
				return fmt.Errorf("subject %q: '>' must be the last token", s)
			}
		default:
			if err := validToken(tok); err != nil {
				return fmt.Errorf("subject %q: token %d %q %w", s, n+1, tok, err)
			}
		}
		start = end + 1
	}
	return nil
}

// Subject patterns are NATS subjects whose tokens (separated by '.') may be
// '*', matching one token, or a final '>', matching one or more. A literal
// subject is a pattern without wildcards, so Covers(pattern, subject) is
// whether pattern matches subject. These functions walk the strings without
// allocating: the sink matches every event's subject against its routes.
// A subject or pattern with an empty token ("", "a..b", "a.") is malformed:
// it covers nothing, and nothing covers or overlaps it.

// Covers reports whether every subject matched by b is matched by a.
func Covers(a, b string) bool {
	at, bt := tokens{rest: a}, tokens{rest: b}
	for {
		x, okx := at.next()
		y, oky := bt.next()
		switch {
		case okx && x == "", oky && y == "":
			return false
		case !okx:
			return !oky
		case x == ">":
			return oky
		case !oky:
			return false
		case x == "*":
			if y == ">" {
				return false
			}
		case x != y:
			return false
		}
	}
}

// Overlap reports whether some subject is matched by both a and b.
func Overlap(a, b string) bool {
	at, bt := tokens{rest: a}, tokens{rest: b}
	for {
		x, okx := at.next()
		y, oky := bt.next()
		switch {
		case okx && x == "", oky && y == "":
			return false
		case !okx || !oky:
			return !okx && !oky
		case x == ">" || y == ">":
			return true
		case x != "*" && y != "*" && x != y:
			return false
		}
	}
}

// tokens iterates over a subject's tokens.
type tokens struct {
	rest string
	done bool
}

func (t *tokens) next() (string, bool) {
	if t.done {
		return "", false
	}
	i := strings.IndexByte(t.rest, '.')
	if i < 0 {
		t.done = true
		return t.rest, true
	}
	tok := t.rest[:i]
	t.rest = t.rest[i+1:]
	return tok, true
}
