package main

import (
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cli"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestBinary_RefusesNATSServerBefore210: against nats-server 2.9, which
// refuses the sink's consumer with a raw API error, `sink provision` and
// `sink` stop at connect with exit status 1 and a message naming the
// server's version and the oldest supported one.
func TestBinary_RefusesNATSServerBefore210(t *testing.T) {
	t.Parallel()
	srv := testutil.StartNATSServerBinary(t, "2.9.25")
	w := newWorldOn(t, srv.URL)
	for _, args := range [][]string{{"provision"}, nil} {
		p := testutil.StartProcess(t, w.bin, w.env(), args...)
		if err := p.Wait(time.Minute); err != nil && p.ExitCode() < 0 {
			t.Fatalf("sink %v: %v\n%s", args, err, p.Output())
		}
		out := p.Output()
		if got, want := p.ExitCode(), cli.ExitFailure; got != want {
			t.Fatalf("sink %v: exit status %d, want %d\n%s", args, got, want, out)
		}
		if !strings.Contains(out, "nats-server 2.9.25 is too old: jetstream-bridge needs nats-server 2.10.0 or newer") {
			t.Fatalf("sink %v: want the found and the needed version named:\n%s", args, out)
		}
	}
	if _, err := w.js.Stream(t.Context(), "jetstream-bridge-stream"); err == nil {
		t.Fatal("the sink provisioned a stream on a server it refuses")
	}
}
