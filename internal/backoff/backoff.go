// Package backoff spaces retries: a delay that starts at an initial value
// and doubles after every wait, up to a cap. Every retry loop of the bridge
// uses it, so each says only its two numbers and what ends it.
package backoff

import (
	"context"
	"time"
)

// Backoff is a capped exponential delay. It is not safe for concurrent use:
// each retry loop owns one.
type Backoff struct {
	initial, max, next time.Duration
}

// New returns a Backoff whose first wait is initial and whose waits double up
// to max.
func New(initial, max time.Duration) Backoff {
	return Backoff{initial: initial, max: max, next: initial}
}

// Delay is how long the next Wait waits (for logs: "retry_in").
func (b *Backoff) Delay() time.Duration { return b.next }

// Wait waits Delay, then doubles it up to the cap. It returns false, at
// once, when ctx ends first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.next)
	defer t.Stop()
	b.next = min(b.next*2, b.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Reset makes the next wait the initial one again (after a success, or a
// connection that lasted long enough to count as healthy).
func (b *Backoff) Reset() { b.next = b.initial }
