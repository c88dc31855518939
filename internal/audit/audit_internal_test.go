package audit

import (
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  bool
	}{
		{in: "all", want: time.Time{}},
		{in: "2026-01-02T14:04:05Z", want: time.Date(2026, 1, 2, 14, 4, 5, 0, time.UTC)},
		{in: "2026-01-02T14:04:05.5+01:00", want: time.Date(2026, 1, 2, 13, 4, 5, 5e8, time.UTC)},
		{in: "1h", want: now.Add(-time.Hour)},
		{in: "90", want: now.Add(-90 * time.Second)},
		{in: "", err: true},
		{in: "yesterday", err: true},
		{in: "-1h", err: true},
		{in: "0", err: true},
	} {
		got, err := ParseSince(tc.in, now)
		if (err != nil) != tc.err || !got.Equal(tc.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// The order check compares each message with the highest position seen so
// far, so one late message counts once and the messages after it are not
// blamed; messages without a position are skipped.
func TestOrderCheck(t *testing.T) {
	pos := func(seq uint64, lsn string, idx int) *Message {
		var l pglogrepl.LSN
		if lsn != "" {
			var err error
			if l, err = pglogrepl.ParseLSN(lsn); err != nil {
				t.Fatal(err)
			}
		}
		return &Message{Seq: seq, MsgID: "e", Pos: envelope.Position{CommitLSN: l, TxIndex: idx}, HasPos: lsn != ""}
	}
	c := orderCheck{limit: 1}
	for _, m := range []*Message{
		pos(1, "0/10", 0), pos(2, "0/10", 1), pos(3, "0/20", 0),
		pos(4, "0/10", 2), // late: one break
		pos(5, "", 0),     // backfilled: no position
		pos(6, "0/20", 1), pos(7, "1/0", 0),
		pos(8, "0/FFFFFFFF", 0), // late: a second break, not listed (limit 1)
	} {
		c.see(m)
	}
	if c.breaks != 2 || len(c.first) != 1 || c.first[0].Seq != 4 || c.first[0].AfterSeq != 3 {
		t.Fatalf("breaks %d, first %+v", c.breaks, c.first)
	}
}

func TestParseUUID(t *testing.T) {
	if _, ok := parseUUID("00000000-0000-4000-8000-000000000001"); !ok {
		t.Fatal("canonical uuid refused")
	}
	for _, s := range []string{"", "dlq-00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-00000000000g", "0000000000004000800000000000000100000"} {
		if _, ok := parseUUID(s); ok {
			t.Fatalf("%q taken for a uuid", s)
		}
	}
}
