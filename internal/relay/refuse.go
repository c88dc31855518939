package relay

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
)

// refusals decides when a message the publisher keeps failing to publish is
// refused for good, so that it is dead-lettered with the reason instead of
// holding every later event (the publisher retries in order) and pinning the
// slot. Two refusals exist besides those JetStream names in its answer (too
// large), and neither comes with an answer to the publish itself:
//
//   - A subject outside the connection's publish permissions: the server drops
//     the message and tells the connection asynchronously ("permissions
//     violation for publish to ..."); the publish only times out. record keeps
//     the subjects the connection reported; a failed publish to one reported
//     recently is refused at once.
//   - A subject no stream covers: the publish is answered "no responders". So
//     is every publish while a stream leader is being elected or the server
//     restarts, so one answer proves nothing. With AUTO_PROVISION the stream
//     directory is asked. Without it (no management calls), the same message
//     must have been answered "no responders" for NO_STREAM_TIMEOUT, and then
//     a probe must show that the stream does answer on the dead-letter
//     subject meanwhile: only then is the subject taken as covered by no
//     stream.
//
// It is used by the publisher's Run goroutine (refused) and by the
// connection's async error callback (record).
type refusals struct {
	r *Relay

	mu     sync.Mutex
	denied map[string]time.Time // subject -> last permission violation reported

	// The message answered "no responders" since when; owned by the
	// publisher's Run goroutine, which retries one message at a time.
	stuckID    string
	stuckSince time.Time
}

var publishDenied = regexp.MustCompile(`(?i)publish to "([^"]+)"`)

// watch wraps the connection's async error handler to record permission
// violations.
func (f *refusals) watch(nc *nats.Conn) {
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		f.record(err)
		if prev != nil {
			prev(c, sub, err)
		}
	})
}

func (f *refusals) record(err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	m := publishDenied.FindStringSubmatch(err.Error())
	if m == nil {
		return // a subscribe violation
	}
	f.mu.Lock()
	if f.denied == nil {
		f.denied = map[string]time.Time{}
	}
	f.denied[m[1]] = time.Now()
	f.mu.Unlock()
}

// deniedRecently reports whether a permission violation for subject was
// reported within window. A publish's violation arrives within moments of
// the publish, and the publisher gives up waiting for an ack after its ack
// timeout, so an older report concerns an earlier publish (permissions may
// have been widened since).
func (f *refusals) deniedRecently(subject string, window time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.denied[subject]
	return ok && time.Since(t) < window
}

// refused is the publisher's Refused hook.
func (f *refusals) refused(ctx context.Context, m *publish.Message, err error) error {
	r := f.r
	if f.deniedRecently(m.Subject, 2*r.opts.AckTimeout+time.Second) {
		return fmt.Errorf("permissions violation for publish to %q: the relay's NATS user may not publish there: %w", m.Subject, nats.ErrPermissionViolation)
	}
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		f.stuckID = ""
		return nil
	}
	if r.opts.Manage {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, serr := r.opts.JS.StreamNameBySubject(cctx, m.Subject); errors.Is(serr, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("no JetStream stream covers subject %q: %w", m.Subject, err)
		}
		return nil
	}
	if f.stuckID != m.MsgID || f.stuckID == "" {
		f.stuckID, f.stuckSince = m.MsgID, time.Now()
		return nil
	}
	waited := time.Since(f.stuckSince)
	if waited < r.opts.NoStreamTimeout {
		return nil
	}
	dlq := r.builder.Subjects.DLQ()
	if m.Subject == dlq || !f.streamAnswers(ctx, dlq) {
		r.log.Error().Str("subject", m.Subject).Str("dlq", dlq).Dur("for", waited.Round(time.Second)).
			Msg("no JetStream stream answers, not even on the dead-letter subject; retrying (is JetStream down, or does the stream not cover these subjects?)")
		return nil
	}
	f.stuckID = ""
	return fmt.Errorf("no JetStream stream answered for subject %q in %s while the stream answers on %s: no stream covers it: %w",
		m.Subject, waited.Round(time.Second), dlq, err)
}

// streamAnswers probes whether a stream answers on subject without storing
// anything: a publish that expects an impossible last sequence is refused by
// the stream with an error answer, and by nobody when no stream is there.
func (f *refusals) streamAnswers(ctx context.Context, subject string) bool {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := f.r.opts.JS.Publish(cctx, subject, nil, jetstream.WithExpectLastSequence(math.MaxUint64))
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}
