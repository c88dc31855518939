package envelope

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// These tests hold the hand-written JSON toolkit to encoding/json, which is
// the reference both for what is valid and for what a string decodes to.

func TestScanValueDepth(t *testing.T) {
	ok := []byte(strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth))
	if got := scanValue(ok, 0, 0); got != len(ok) {
		t.Fatalf("scanValue of %d levels=%d, want %d", maxDepth, got, len(ok))
	}
	deep := []byte(strings.Repeat(`{"a":`, maxDepth+1) + "1" + strings.Repeat("}", maxDepth+1))
	if got := scanValue(deep, 0, 0); got != -1 {
		t.Fatalf("scanValue of %d levels=%d, want -1", maxDepth+1, got)
	}
}

func TestScanValueTable(t *testing.T) {
	for _, s := range []string{
		`0`, `-0`, `1.5e10`, `-1E-2`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `1e+`, `"`, `"\u12"`, `"\x"`,
		`"\u00e9\ud83d\ude80"`, `tru`, `true`, `nulll`, `[`, `[]`, `[,]`, `[1,]`, `{"a"}`, `{"a":1,}`,
		`{"a" : [ 1 , { "b" : null } ] }`, `{1:2}`, "\"\x7f\"", "\"\x1f\"", "\"\xff\"", `[1 2]`,
	} {
		data := []byte(s)
		got := scanValue(data, 0, 0) == len(data)
		if want := json.Valid(data); got != want {
			t.Errorf("scanValue(%q) valid=%v, json.Valid=%v", s, got, want)
		}
	}
}

func FuzzScanValue(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e-3,true,false,null,"x\n\u00e9"]}`, `[]`, `{}`, `"\ud800"`, `-0.0E+1`, `{"a"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Depths between ours and encoding/json's limit differ on purpose.
		if bytes.Count(data, []byte("["))+bytes.Count(data, []byte("{")) >= maxDepth {
			return
		}
		trimmed := bytes.Trim(data, " \t\r\n")
		got := len(trimmed) > 0 && scanValue(trimmed, 0, 0) == len(trimmed)
		if want := json.Valid(data); got != want {
			t.Fatalf("scanValue(%q) valid=%v, json.Valid=%v", data, got, want)
		}
		if got && trimmed[0] == '"' {
			var want string
			if err := json.Unmarshal(trimmed, &want); err != nil {
				t.Fatal(err)
			}
			if u := unquote(trimmed); u != want {
				t.Fatalf("unquote(%q)=%q, encoding/json %q", trimmed, u, want)
			}
			_, slow := scanString(trimmed, 0)
			if !slow && string(trimmed[1:len(trimmed)-1]) != want {
				t.Fatalf("scanString(%q) says plain, but it decodes to %q", trimmed, want)
			}
		}
	})
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "\x00\x1f\x7f", "\xff\xfe", "\u2028\u2029", "é🚀", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("appendJSONString(%q)=%q is not valid JSON/UTF-8", s, out)
		}
		if bytes.ContainsAny(out, "\u2028\u2029") {
			t.Fatalf("appendJSONString(%q)=%q has a raw line separator", s, out)
		}
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("appendJSONString(%q) decodes to %q, encoding/json to %q", s, got, want)
		}
		if u := unquote(out); u != want {
			t.Fatalf("unquote(appendJSONString(%q))=%q, want %q", s, u, want)
		}
	})
}

func FuzzParseTimestamp(f *testing.F) {
	for _, s := range []string{"2026-11-24 15:08:12.123456+00", "2026-11-24 15:08:12+05:30", "1900-01-01 00:00:00+00:53:28",
		"2026-11-24T15:08:12Z", "infinity", "0000-01-01 00:00:00+01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := appendTimestamp(nil, s)
		if err != nil {
			return
		}
		// Whatever we write must be RFC 3339 in UTC, for the same instant.
		tm, err := parseTimestamp(string(out))
		if err != nil {
			t.Fatalf("appendTimestamp(%q)=%q, which does not parse back: %v", s, out, err)
		}
		orig, _ := parseTimestamp(s)
		if !tm.Equal(orig) || out[len(out)-1] != 'Z' {
			t.Fatalf("appendTimestamp(%q)=%q: instant %v, want %v", s, out, tm, orig)
		}
		var std time.Time
		if err := std.UnmarshalText(out); err != nil || !std.Equal(orig) {
			t.Fatalf("appendTimestamp(%q)=%q: time.Time reads %v, %v; want %v", s, out, std, err, orig)
		}
	})
}
