package envelope

import (
	"errors"
	"time"
)

var errTimestamp = errors.New("want YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]]")

// appendTimestamp converts a timestamptz in Postgres text form (DateStyle
// ISO: "2026-11-24 15:08:12.123456+00", offsets "+05:30", "-03", or the
// historical "+00:53:28") to RFC 3339 in UTC with the fraction kept, as
// time.RFC3339Nano prints it. A 'T' separator and a 'Z' zone are accepted too,
// so an RFC 3339 value passes through. What RFC 3339 cannot carry (BC dates,
// years past 9999, "infinity") is an error, not a guess.
func appendTimestamp(dst []byte, s string) ([]byte, error) {
	t, err := parseTimestamp(s)
	if err != nil {
		return dst, err
	}
	return t.AppendFormat(dst, time.RFC3339Nano), nil
}

func parseTimestamp(s string) (time.Time, error) {
	// Fixed part: "YYYY-MM-DD HH:MM:SS" is 19 bytes.
	if len(s) < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') ||
		s[13] != ':' || s[16] != ':' {
		return time.Time{}, errTimestamp
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return time.Time{}, errTimestamp
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(year, month) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, errors.New("date or time out of range")
	}
	i := 19
	nsec := 0
	if i < len(s) && s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		n := i - start
		if n == 0 || n > 9 {
			return time.Time{}, errTimestamp
		}
		nsec, _ = digits(s[start:i])
		for ; n < 9; n++ {
			nsec *= 10
		}
	}
	if i >= len(s) {
		return time.Time{}, errors.New("missing utc offset")
	}
	offset := 0
	switch s[i] {
	case 'Z', 'z':
		i++
	case '+', '-':
		sign := 1
		if s[i] == '-' {
			sign = -1
		}
		i++
		// ±HH, then optionally :MM and :SS.
		var parts [3]int
		for p := 0; p < 3; p++ {
			if p > 0 {
				if i >= len(s) || s[i] != ':' {
					break
				}
				i++
			}
			if len(s)-i < 2 {
				return time.Time{}, errTimestamp
			}
			v, ok := digits(s[i : i+2])
			if !ok {
				return time.Time{}, errTimestamp
			}
			parts[p] = v
			i += 2
		}
		if parts[0] > 15 || parts[1] > 59 || parts[2] > 59 {
			return time.Time{}, errors.New("utc offset out of range")
		}
		offset = sign * (parts[0]*3600 + parts[1]*60 + parts[2])
	default:
		return time.Time{}, errTimestamp
	}
	if i != len(s) {
		return time.Time{}, errTimestamp
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC).
		Add(-time.Duration(offset) * time.Second)
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}, errors.New("year out of range for RFC 3339")
	}
	return t, nil
}

// digits parses a short run of ASCII digits.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
