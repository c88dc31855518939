package main

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
)

// observer receives everything stored in the stream on the publish subject
// through an ordered consumer and records, per event number, when it
// arrived. Receipt follows the stream's store (and so the publisher's ack):
// commit→receipt is an upper bound of commit→ack, measured the same way for
// the relay and for the polling baseline.
type observer struct {
	recv  clocks
	count atomic.Int64
	cc    jetstream.ConsumeContext
}

func (b *bench) observe(ctx context.Context) (*observer, error) {
	s, err := b.js.Stream(ctx, streamName)
	if err != nil {
		return nil, fmt.Errorf("observe stream: %w", err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, fmt.Errorf("observe stream: %w", err)
	}
	o := &observer{}
	run := b.runID
	o.cc, err = cons.Consume(func(msg jetstream.Msg) {
		now := time.Now().UnixNano()
		if seq, ok := seqOf(run, msg.Headers().Get(envelope.HeaderMsgID)); ok {
			o.recv.set(seq, now)
		}
		o.count.Add(1)
	})
	if err != nil {
		return nil, fmt.Errorf("observe stream: %w", err)
	}
	return o, nil
}

func (o *observer) stop() {
	if o != nil && o.cc != nil {
		o.cc.Stop()
	}
}

// latencies returns arrival minus commit for events first..last-1 that
// committed; missing counts committed events not (yet) received.
func (o *observer) latencies(commits *clocks, first, last uint64) (l latencies, missing int) {
	for s := first; s < last; s++ {
		c := commits.get(s)
		if c == 0 {
			continue
		}
		r := o.recv.get(s)
		if r == 0 {
			missing++
			continue
		}
		l = append(l, max(float64(r-c), 0)/1e9)
	}
	return l, missing
}

// buildMessages builds n envelopes the way the relay does (same builder,
// same body size and headers, a source position) for events numbered from
// the run's sequence.
func (b *bench) buildMessages(n int) ([]envelope.Message, error) {
	return b.buildKeyed(n, keys, nil, 0)
}

// buildPartitioned is buildMessages on PARTITIONS partitions.
func (b *bench) buildPartitioned(n, partitions int) ([]envelope.Message, error) {
	return b.buildKeyed(n, keys, nil, partitions)
}

// buildKeyed is buildMessages with the events' resource ids spread over
// nkeys, payload (when not nil) as every event's payload, on PARTITIONS
// partitions when partitions > 0.
func (b *bench) buildKeyed(n, nkeys int, payload []byte, partitions int) ([]envelope.Message, error) {
	builder := &envelope.Builder{Producer: appSrc, Subjects: envelope.Subjects{App: appSrc, Dest: appDst},
		MaxPayload: int(b.nc.MaxPayload()), Partitions: partitions}
	first := b.seq.Add(uint64(n)) - uint64(n)
	out := make([]envelope.Message, n)
	for i := range out {
		r := row(b.runID, first+uint64(i))
		r.ResourceID = strconv.FormatUint((first+uint64(i))%uint64(nkeys), 10)
		if payload != nil {
			r.Payload = payload
		}
		m, err := builder.Build(r, envelope.Position{CommitLSN: 0x16B374D48, TxIndex: i % 10})
		if err != nil {
			return nil, fmt.Errorf("build envelope: %w", err)
		}
		out[i] = m
	}
	return out, nil
}

// publishAsync publishes msgs with a window of MAX_INFLIGHT unacknowledged
// messages, acks checked in order as the relay's publisher does, and
// returns how long it took until the last ack.
func (b *bench) publishAsync(ctx context.Context, msgs []envelope.Message) (time.Duration, error) {
	window := b.opts.MaxInflight
	tokens := make(chan struct{}, window)
	futures := make(chan jetstream.PubAckFuture, window)
	var failed atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
			<-tokens
		}
	}()
	start := time.Now()
	for i := range msgs {
		select {
		case tokens <- struct{}{}:
		case <-ctx.Done():
			close(futures)
			<-done
			return 0, ctx.Err()
		}
		m := &msgs[i]
		f, err := b.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		if err != nil {
			close(futures)
			<-done
			return 0, fmt.Errorf("publish: %w", err)
		}
		futures <- f
	}
	close(futures)
	<-done
	elapsed := time.Since(start)
	if n := failed.Load(); n > 0 {
		return 0, fmt.Errorf("%d publishes failed, first: %v", n, firstErr.Load())
	}
	return elapsed, nil
}

// publishWindow publishes msgs through the relay's publish window
// (internal/publish, MAX_INFLIGHT) and returns how long it took until the
// last ack.
func (b *bench) publishWindow(ctx context.Context, msgs []envelope.Message) (time.Duration, error) {
	var acked atomic.Int64
	all := make(chan struct{})
	n := int64(len(msgs))
	p := publish.New(b.js, publish.Options{MaxInflight: b.opts.MaxInflight, Log: zerolog.Nop(),
		Acked: func(*publish.Message, *jetstream.PubAck) {
			if acked.Add(1) == n {
				close(all)
			}
		}})
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(pctx) }()
	start := time.Now()
	for i := range msgs {
		m := &msgs[i]
		if err := p.Publish(pctx, &publish.Message{Subject: m.Subject, Body: m.Body, Header: m.Header, MsgID: m.MsgID}); err != nil {
			return 0, fmt.Errorf("publish: %w", err)
		}
	}
	select {
	case <-all:
	case err := <-runErr:
		return 0, fmt.Errorf("publish window stopped: %v", err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return time.Since(start), nil
}

// waitFor polls cond every interval until it reports true, ctx ends or
// timeout passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done within %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
