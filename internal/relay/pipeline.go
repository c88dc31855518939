package relay

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
)

// pipeline turns events into messages and submits them in order.
func (r *Relay) pipeline(ctx context.Context, pub *publish.Publisher, events <-chan *cdc.Event) error {
	for ev := range events {
		m := r.message(ev)
		if m == nil {
			continue
		}
		m.Ahead = len(events) // a burst of ready events may share a fast batch
		if err := pub.Publish(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// message builds ev's message: its envelope, or the dead letter of its row.
// Nil means the event is done already (skipped with UseDLQ false).
func (r *Relay) message(ev *cdc.Event) *publish.Message {
	o := outgoingPool.Get().(*outgoing)
	o.r, o.ev = r, ev
	if ev.Err == nil {
		err := r.builder.BuildInto(&o.env, &ev.Row, envelope.Position{CommitLSN: ev.CommitLSN, TxIndex: ev.Index})
		if err == nil {
			o.pub = publish.Message{Subject: o.env.Subject, Body: o.env.Body, Header: o.env.Header, MsgID: o.env.MsgID, Owner: o}
			if r.tracer != nil {
				r.startSpan(o)
			}
			return &o.pub
		}
		ev.Err = err
	}
	dl := r.rowDeadLetter(ev)
	if dl == nil {
		o.Settled(nil, nil)
		return nil
	}
	o.pub = *dl
	o.pub.Owner = o
	if r.tracer != nil {
		r.startSpan(o)
	}
	return &o.pub
}

// outgoing owns one event from the moment the pipeline takes it until it is
// done: its message, with the body and header storage, and the event's
// completion. The publisher settles every message once (publish.Owner), and
// Settled is the only place an event handed over by the stream is marked
// done; the pipeline calls it itself for an event it never submits.
//
// Once settled, nothing refers to the message any more (the NATS client
// copied it when it was sent), and the outgoing goes back to outgoingPool
// for the next event: at full speed the relay then allocates about half as
// many bytes per event, and the garbage collector runs half as often.
type outgoing struct {
	r    *Relay
	ev   *cdc.Event
	pub  publish.Message // Owner is the outgoing itself
	env  envelope.Message
	span trace.Span // nil when traces are off
}

var outgoingPool = sync.Pool{New: func() any { return new(outgoing) }}

// maxPooledBody is the largest body whose storage goes back to the pool; the
// rare larger one is left to the garbage collector.
const maxPooledBody = 16 << 10

// Settled runs in the publisher's ack loop, in submission order, once per
// event: m is the event's message or the dead letter that replaced it, ack
// nil when it was dropped (UseDLQ false, already logged and counted).
func (o *outgoing) Settled(m *publish.Message, ack *jetstream.PubAck) {
	r, ev := o.r, o.ev
	if o.span != nil {
		endSpan(o.span, m, ack)
	}
	switch {
	case ack == nil:
	case m.Header.Get(envelope.HeaderErrorClass) != "":
		r.obs.DeadLettered()
	default:
		r.obs.Published(ack.Duplicate)
		if !ev.CommitTime.IsZero() {
			// The events of a transaction are acked one after the other: one
			// clock reading serves them all.
			if tx := ev.Tx(); tx != r.ackTx {
				r.ackTx, r.ackTime = tx, time.Now()
			}
			r.obs.CommitToAck(r.ackTime.Sub(ev.CommitTime))
		}
	}
	ev.Done()
	if cap(o.env.Body) > maxPooledBody {
		return
	}
	o.r, o.ev, o.pub, o.span = nil, nil, publish.Message{}, nil
	outgoingPool.Put(o)
}
