package main

import (
	"testing"
	"unsafe"

	"github.com/jackc/pglogrepl"
)

// The commit LSN is formatted once per transaction, as pglogrepl prints it.
func TestLSNText(t *testing.T) {
	var c lsnText
	for _, tt := range []struct {
		lsn    pglogrepl.LSN
		reused bool
	}{
		{0, false}, {0, true}, {0x16B374D848, false}, {0x16B374D848, true}, {0x16B374D848, true},
		{0x16B374D900, false}, {0x16B374D848, false}, {^pglogrepl.LSN(0), false},
	} {
		prev := c.text
		got := c.format(tt.lsn)
		if want := tt.lsn.String(); got != want {
			t.Fatalf("format(%#x)=%q, want %q", uint64(tt.lsn), got, want)
		}
		if reused := prev != "" && unsafe.StringData(got) == unsafe.StringData(prev); reused != tt.reused {
			t.Fatalf("format(%#x): reused=%v, want %v", uint64(tt.lsn), reused, tt.reused)
		}
	}
}
