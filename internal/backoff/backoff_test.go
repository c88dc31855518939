package backoff_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/backoff"
)

func TestDelaysDoubleUpToTheCapAndReset(t *testing.T) {
	ctx := context.Background()
	b := backoff.New(time.Millisecond, 5*time.Millisecond)
	var got []time.Duration
	for range 5 {
		got = append(got, b.Delay())
		if !b.Wait(ctx) {
			t.Fatal("Wait returned false with a live context")
		}
	}
	want := []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays=%v, want %v", got, want)
		}
	}
	b.Reset()
	if got, want := b.Delay(), time.Millisecond; got != want {
		t.Fatalf("after Reset delay=%v, want %v", got, want)
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := backoff.New(time.Hour, time.Hour)
	start := time.Now()
	if b.Wait(ctx) {
		t.Fatal("Wait returned true with an ended context")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Wait took %v after the context ended", d)
	}
}
