package main_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestProvisionOnEachServer: `relay provision` succeeds, twice, on the
// embedded server and on the oldest supported nats-server; the stream
// allows fast batches only where the server takes them (2.14+).
func TestProvisionOnEachServer(t *testing.T) {
	t.Parallel()
	for _, srv := range testutil.NATSServers() {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, testutil.NewDatabase(t), srv.Start(t))
			h.provision()
			h.provision() // idempotent
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := h.js.Stream(ctx, stream)
			if err != nil {
				t.Fatalf("stream after relay provision: %v", err)
			}
			if got, want := s.CachedInfo().Config.AllowBatchPublish, srv.Name == "embedded"; got != want {
				t.Fatalf("stream allow_batched=%v on %s, want %v", got, h.nc.ConnectedServerVersion(), want)
			}
		})
	}
}
