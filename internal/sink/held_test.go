package sink_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// TestMaxHeldBytes: the messages held stay within MaxHeldBytes, but for the
// pull that brings a message larger than those before it (over the bound by
// that message at most), while events keep flowing, and a message larger
// than the bound on its own is applied rather than stuck — through both
// pull sources.
func TestMaxHeldBytes(t *testing.T) {
	for _, src := range []string{"jetstream", "restricted"} {
		t.Run(src, func(t *testing.T) {
			const (
				bound  = 24 << 10
				events = 60
				bigAt  = 30
			)
			e := newEnv(t)
			for i := range events {
				size := 2 << 10
				if i == bigAt {
					size = 3 * bound // larger than the bound on its own
				}
				m, err := e.builder.Build(&envelope.Row{
					EventID: fmt.Sprintf("ev-%03d", i), ResourceType: "order", ResourceID: fmt.Sprint(i), EventType: "order.updated", OccurredAt: "2026-01-02 03:04:05+00",
					Payload: []byte(`{"blob":"` + string(bytes.Repeat([]byte{'x'}, size)) + `"}`),
				}, envelope.Position{})
				if err != nil {
					t.Fatal(err)
				}
				e.publish(t, m)
			}

			var (
				mu        sync.Mutex
				maxShared int64 // the most bytes held by two messages or more
				alone     int64 // the most bytes held by one message alone
			)
			h := &effectHandler{before: func(*sink.Event, int) error {
				time.Sleep(5 * time.Millisecond) // let messages wait in their lanes
				return nil
			}}
			obs, _ := e.run(t, h, func(o *sink.Options) {
				o.MaxHeldBytes, o.BatchSize, o.Concurrency = bound, 10, 2
				if src == "restricted" {
					o.Source = sink.RestrictedPull(e.nc, streamName, durable, filter)
				}
				sink.SetHeldProbe(o, func(n int, b int64) {
					mu.Lock()
					defer mu.Unlock()
					if n > 1 {
						maxShared = max(maxShared, b)
					} else {
						alone = max(alone, b)
					}
				})
			})
			obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: events})
			if got := len(e.effects(t)); got != events {
				t.Fatalf("%d effects, want %d", got, events)
			}
			mu.Lock()
			defer mu.Unlock()
			big := int64(3*bound + 1<<10) // its body, headers aside
			if maxShared > bound+big {
				t.Errorf("%d bytes held by several messages, over the bound of %d by more than the large message", maxShared, bound)
			}
			if maxShared < bound/2 {
				t.Errorf("at most %d bytes held by several messages: the bound of %d was never approached", maxShared, bound)
			}
			if max(alone, maxShared) <= bound {
				t.Errorf("the large message was never held (at most %d bytes held)", max(alone, maxShared))
			}
		})
	}
}
