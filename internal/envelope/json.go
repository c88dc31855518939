package envelope

import (
	"unicode/utf16"
	"unicode/utf8"
)

// A small, allocation-free JSON toolkit: just enough to validate a value,
// walk the members of an object, and encode/decode strings. It exists because
// the relay builds an envelope per event and encoding/json's reflection (and
// its allocations) would dominate that cost; the sink reuses it so that both
// sides agree on what valid JSON is. Its acceptance rules match json.Valid
// (fuzzed against it): RFC 8259 syntax, strings not checked for valid UTF-8,
// nesting deeper than maxDepth refused.

// maxDepth bounds nesting. encoding/json refuses more than 10000 levels, and a
// payload sits one level inside the envelope, so anything Build accepts must
// stay below that for the sink (or any encoding/json reader) to parse it.
const maxDepth = 9000

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

// scanValue returns the end of the JSON value starting at data[i] (no leading
// space), or -1 when there is none.
func scanValue(data []byte, i, depth int) int {
	if i >= len(data) {
		return -1
	}
	switch c := data[i]; {
	case c == '"':
		end, _ := scanString(data, i)
		return end
	case c == '{':
		if depth >= maxDepth {
			return -1
		}
		it := objectIter{data: data, pos: i + 1, depth: depth + 1}
		for {
			_, _, more, ok := it.next()
			if !ok {
				return -1
			}
			if !more {
				return it.pos
			}
		}
	case c == '[':
		if depth >= maxDepth {
			return -1
		}
		i = skipSpace(data, i+1)
		if i < len(data) && data[i] == ']' {
			return i + 1
		}
		for {
			i = scanValue(data, i, depth+1)
			if i < 0 {
				return -1
			}
			i = skipSpace(data, i)
			if i >= len(data) {
				return -1
			}
			switch data[i] {
			case ',':
				i = skipSpace(data, i+1)
			case ']':
				return i + 1
			default:
				return -1
			}
		}
	case c == 't':
		return scanLiteral(data, i, "true")
	case c == 'f':
		return scanLiteral(data, i, "false")
	case c == 'n':
		return scanLiteral(data, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(data, i)
	default:
		return -1
	}
}

func scanLiteral(data []byte, i int, lit string) int {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// scanNumber follows the RFC 8259 number grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func scanNumber(data []byte, i int) int {
	if data[i] == '-' {
		i++
	}
	if i >= len(data) {
		return -1
	}
	switch {
	case data[i] == '0':
		i++
	case data[i] >= '1' && data[i] <= '9':
		i = skipDigits(data, i+1)
	default:
		return -1
	}
	if i < len(data) && data[i] == '.' {
		j := skipDigits(data, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := skipDigits(data, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

// scanString returns the end of the string whose opening quote is data[i]
// (or -1), and whether decoding it needs more than copying its bytes: an
// escape, or bytes that are not valid UTF-8.
func scanString(data []byte, i int) (end int, slow bool) {
	i++
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			return i + 1, slow
		case c == '\\':
			slow = true
			if i+1 >= len(data) {
				return -1, slow
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(data)-i < 6 || !isHex4(data[i+2:i+6]) {
					return -1, slow
				}
				i += 6
			default:
				return -1, slow
			}
		case c < 0x20:
			return -1, slow
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				slow = true
			}
			i += size
		}
	}
	return -1, slow
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if hexVal(c) < 0 {
			return false
		}
	}
	return true
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// objectIter walks the members of an object. pos starts just after '{' and
// ends just after '}' once next reports no more members.
type objectIter struct {
	data  []byte
	pos   int
	depth int // depth of the members' values
	n     int
}

// next returns the next member's raw key (with quotes) and raw value.
// more is false at the closing brace; ok is false on a syntax error.
func (it *objectIter) next() (key, val []byte, more, ok bool) {
	i := skipSpace(it.data, it.pos)
	if i >= len(it.data) {
		return nil, nil, false, false
	}
	if it.n > 0 {
		switch it.data[i] {
		case '}':
			it.pos = i + 1
			return nil, nil, false, true
		case ',':
			i = skipSpace(it.data, i+1)
		default:
			return nil, nil, false, false
		}
	} else if it.data[i] == '}' {
		it.pos = i + 1
		return nil, nil, false, true
	}
	if i >= len(it.data) || it.data[i] != '"' {
		return nil, nil, false, false
	}
	kEnd, _ := scanString(it.data, i)
	if kEnd < 0 {
		return nil, nil, false, false
	}
	key = it.data[i:kEnd]
	i = skipSpace(it.data, kEnd)
	if i >= len(it.data) || it.data[i] != ':' {
		return nil, nil, false, false
	}
	i = skipSpace(it.data, i+1)
	vEnd := scanValue(it.data, i, it.depth)
	if vEnd < 0 {
		return nil, nil, false, false
	}
	val = it.data[i:vEnd]
	it.pos = vEnd
	it.n++
	return key, val, true, true
}

// keyIs reports whether the raw key (with quotes) decodes to name. Keys with
// escapes are decoded; plain ones are compared in place.
func keyIs(raw []byte, name string) bool {
	inner := raw[1 : len(raw)-1]
	if len(inner) == len(name) && string(inner) == name {
		return true
	}
	for _, c := range inner {
		if c == '\\' {
			return unquote(raw) == name
		}
	}
	return false
}

// unquote decodes a raw JSON string (quotes included, syntax already checked)
// the way encoding/json does: invalid UTF-8 bytes and unpaired surrogate
// escapes become U+FFFD.
func unquote(raw []byte) string {
	s := raw[1 : len(raw)-1]
	b := make([]byte, 0, len(s)+utf8.UTFMax)
	return string(appendUnquoted(b, s))
}

func appendUnquoted(b, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			switch s[i+1] {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r := getu4(s[i+2:])
				i += 6
				if utf16.IsSurrogate(r) {
					if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
						if dec := utf16.DecodeRune(r, getu4(s[i+2:])); dec != utf8.RuneError {
							b = utf8.AppendRune(b, dec)
							i += 6
							continue
						}
					}
					r = utf8.RuneError
				}
				b = utf8.AppendRune(b, r)
				continue
			default: // '"', '\\', '/'
				b = append(b, s[i+1])
			}
			i += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			b = utf8.AppendRune(b, r)
			i += size
		}
	}
	return b
}

func getu4(s []byte) rune {
	if len(s) < 4 || !isHex4(s) {
		return -1
	}
	return rune(hexVal(s[0])<<12 | hexVal(s[1])<<8 | hexVal(s[2])<<4 | hexVal(s[3]))
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. It escapes per JSON, not Go:
// '"', '\\' and control characters (short forms where JSON has them, \u00XX
// otherwise), U+2028 and U+2029 (so the output is also safe inside
// JavaScript), and it replaces each byte of invalid UTF-8 with \ufffd, the
// same coercion encoding/json applies, so the output is always valid UTF-8.
// NUL is kept, as \u0000: the envelope carries the data as it was.
func appendJSONString(dst []byte, s string) []byte { return appendJSON(dst, s, false) }

// AppendJSONBString appends s as a JSON string for a jsonb column: as the
// envelope writes strings, except that NUL becomes \ufffd, as invalid UTF-8
// does, because Postgres refuses \u0000 in jsonb and one odd header must not
// make a whole event fail.
func AppendJSONBString(dst []byte, s string) []byte { return appendJSON(dst, s, true) }

func appendJSON(dst []byte, s string, jsonb bool) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case 0:
				if jsonb {
					dst = append(dst, `\ufffd`...)
					break
				}
				dst = append(dst, '\\', 'u', '0', '0', '0', '0')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// jsonStringLen is an upper bound guess for appendJSONString's output, used
// to size buffers; escapes beyond it just grow the buffer.
func jsonStringLen(s string) int { return len(s) + 2 }
