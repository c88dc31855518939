// Package publish sends messages to JetStream through a bounded asynchronous
// window and provisions the stream they land in.
//
// The Publisher keeps at most MaxInflight messages unacknowledged and reports
// acknowledgements strictly in submission order. When a publish fails it stops
// sending new messages, re-publishes every failed message of the window in its
// original order with the same message id (JetStream deduplicates those that
// did get stored), and only then resumes. So in the normal path the stream
// order is the submission order, and no message is ever skipped: a message is
// either acknowledged, replaced by a dead letter the caller built, or the
// publisher stops with an error.
//
// It knows nothing of Postgres or LSNs.
package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Message is one message to publish. Header must already carry Nats-Msg-Id.
type Message struct {
	Subject string
	Body    []byte
	Header  nats.Header
	MsgID   string
	Ref     any // the caller's handle, given back in Acked and Rejected

	deadLetter bool // a replacement built by Rejected: never rejected again
}

// Options configure a Publisher.
type Options struct {
	MaxInflight int           // window size; default 1024
	AckTimeout  time.Duration // per publish; default 10s
	MaxBackoff  time.Duration // retry backoff cap; default 5s
	// Acked is called, in submission order, once each message is stored (or
	// once its replacement from Rejected is stored).
	Acked func(m *Message, ack *jetstream.PubAck)
	// Rejected is called for a message JetStream can never accept as asked
	// (too large for the stream, no stream for its subject). It returns the
	// dead letter to publish in its place, or an error to stop the publisher.
	Rejected func(m *Message, err error) (*Message, error)
	// NoStream decides whether a "no responders" failure means no stream
	// covers the subject (true: reject) rather than JetStream being briefly
	// unavailable (false: retry). Nil means always retry.
	NoStream func(ctx context.Context, subject string) bool
	// Retried is called for every retry, for metrics.
	Retried func(m *Message, err error)
	Log     zerolog.Logger
}

type pending struct {
	m   *Message
	fut jetstream.PubAckFuture
	err error // publish failed before a future existed
}

// Publisher is the asynchronous window. Use Publish from one goroutine and run
// Run in another.
type Publisher struct {
	js    jetstream.JetStream
	opts  Options
	slots chan struct{}
	queue chan pending

	sendMu sync.Mutex // held while sending one message, and for a whole recovery
	fatal  chan error
	once   sync.Once
}

// New returns a Publisher on js. js should be created with
// jetstream.WithPublishAsyncMaxPending above MaxInflight so the client never stalls.
func New(js jetstream.JetStream, opts Options) *Publisher {
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = 1024
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 10 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	return &Publisher{
		js:    js,
		opts:  opts,
		slots: make(chan struct{}, opts.MaxInflight),
		queue: make(chan pending, opts.MaxInflight),
		fatal: make(chan error, 1),
	}
}

// JetStreamOptions are the options the client needs for this publisher's window.
func JetStreamOptions(maxInflight int, ackTimeout time.Duration) []jetstream.JetStreamOpt {
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncMaxPending(maxInflight*2 + 16),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
	}
}

// Publish submits m, blocking while the window is full. It returns an error
// only when ctx ends or the publisher stopped.
func (p *Publisher) Publish(ctx context.Context, m *Message) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case err := <-p.fatal:
		p.fatal <- err
		return err
	}
	p.sendMu.Lock()
	fut, err := p.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
	p.queue <- pending{m: m, fut: fut, err: err}
	p.sendMu.Unlock()
	return nil
}

// Inflight is the number of messages submitted and not yet acknowledged.
func (p *Publisher) Inflight() int { return len(p.slots) }

// Run processes acknowledgements until ctx ends or a message cannot be
// published nor dead-lettered.
func (p *Publisher) Run(ctx context.Context) error {
	for {
		var pend pending
		select {
		case pend = <-p.queue:
		case <-ctx.Done():
			return nil
		}
		ack, err := p.wait(ctx, pend)
		if err == nil {
			p.acked(pend.m, ack)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := p.recover(ctx, pend, err); err != nil {
			p.once.Do(func() { p.fatal <- err })
			return err
		}
	}
}

func (p *Publisher) acked(m *Message, ack *jetstream.PubAck) {
	p.opts.Acked(m, ack)
	<-p.slots
}

func (p *Publisher) wait(ctx context.Context, pend pending) (*jetstream.PubAck, error) {
	if pend.err != nil {
		return nil, pend.err
	}
	select {
	case ack := <-pend.fut.Ok():
		return ack, nil
	case err := <-pend.fut.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// recover re-publishes first and every later failed message of the window in
// order, with new sends held back until the window is empty.
func (p *Publisher) recover(ctx context.Context, first pending, firstErr error) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.opts.Log.Warn().Err(firstErr).Str("subject", first.m.Subject).Str("msg_id", first.m.MsgID).
		Int("inflight", p.Inflight()).Msg("publish failed, re-publishing the window in order")
	if err := p.republish(ctx, first.m, firstErr); err != nil {
		return err
	}
	for {
		select {
		case pend := <-p.queue:
			ack, err := p.wait(ctx, pend)
			if err == nil {
				p.acked(pend.m, ack)
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			if err := p.republish(ctx, pend.m, err); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// republish publishes m synchronously until it is stored, rejected or ctx ends.
func (p *Publisher) republish(ctx context.Context, m *Message, err error) error {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return nil
		}
		if p.permanent(ctx, m, err) {
			if m.deadLetter {
				return fmt.Errorf("dead letter %s on %s cannot be published: %w", m.MsgID, m.Subject, err)
			}
			return p.reject(ctx, m, err)
		}
		if p.opts.Retried != nil {
			p.opts.Retried(m, err)
		}
		if attempt == 1 || attempt%20 == 0 {
			p.opts.Log.Warn().Err(err).Str("subject", m.Subject).Str("msg_id", m.MsgID).Int("attempt", attempt).
				Msg("retrying publish")
		}
		if attempt > 1 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			backoff = min(backoff*2, p.opts.MaxBackoff)
		}
		pctx, cancel := context.WithTimeout(ctx, p.opts.AckTimeout)
		var ack *jetstream.PubAck
		ack, err = p.js.PublishMsg(pctx, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		cancel()
		if err == nil {
			p.acked(m, ack)
			return nil
		}
	}
}

func (p *Publisher) permanent(ctx context.Context, m *Message, err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return true
	case errors.Is(err, nats.ErrMaxPayload):
		return true
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return p.opts.NoStream != nil && p.opts.NoStream(ctx, m.Subject)
	}
	return false
}

func (p *Publisher) reject(ctx context.Context, m *Message, cause error) error {
	if p.opts.Rejected == nil {
		return fmt.Errorf("publish %s (msg id %s): %w", m.Subject, m.MsgID, cause)
	}
	dl, err := p.opts.Rejected(m, cause)
	if err != nil {
		return err
	}
	if dl == nil { // the caller accounted for it
		<-p.slots
		return nil
	}
	dl.Ref, dl.deadLetter = m.Ref, true
	pctx, cancel := context.WithTimeout(ctx, p.opts.AckTimeout)
	ack, err := p.js.PublishMsg(pctx, &nats.Msg{Subject: dl.Subject, Data: dl.Body, Header: dl.Header})
	cancel()
	if err == nil {
		p.acked(dl, ack)
		return nil
	}
	return p.republish(ctx, dl, err)
}
