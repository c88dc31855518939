package envelope_test

import (
	"math/rand/v2"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// The wire form of an LSN is byte for byte pglogrepl's (and Postgres's).
func TestFormatLSN(t *testing.T) {
	lsns := []pglogrepl.LSN{0, 1, 0xF, 0x10, 0x16B374D848, 0xFFFFFFFF, 0x100000000, 0xABCDEF0000000001, ^pglogrepl.LSN(0)}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		lsns = append(lsns, pglogrepl.LSN(rnd.Uint64()>>rnd.IntN(64)))
	}
	for _, lsn := range lsns {
		if got, want := envelope.FormatLSN(lsn), lsn.String(); got != want {
			t.Fatalf("FormatLSN(%#x)=%q, want %q", uint64(lsn), got, want)
		}
	}
}

// BenchmarkFormatLSN is the commit LSN in text, once per transaction.
func BenchmarkFormatLSN(b *testing.B) {
	lsn := pglogrepl.LSN(0x16B374D848)
	b.Run("pglogrepl", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = lsn.String()
		}
	})
	b.Run("FormatLSN", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = envelope.FormatLSN(lsn)
		}
	})
}
