package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ConsumerSpec is the durable consumer a sink wants: a pull consumer, or
// with DeliverSubject a push consumer delivering to that subject in queue
// group Durable.
type ConsumerSpec struct {
	Stream         string
	Durable        string
	Filter         string
	DeliverSubject string // push mode when set
	// DeliverIsDefault says DeliverSubject was not configured but derived:
	// an existing push durable's deliver subject is then used as it is.
	// Other processes (more sinks, or the Ruby gem's push subscribers on
	// {dest}.sync.{app}.worker) listen there; moving it would leave them with
	// nothing.
	DeliverIsDefault bool
	AckWait          time.Duration
	MaxDeliver       int             // the sink's MAX_DELIVER; bounds the BackOff list
	Backoff          []time.Duration // the sink's BACKOFF
	MaxAckPending    int
}

// Config returns the consumer configuration: explicit ack, deliver all,
// unlimited server-side deliveries (the sink counts attempts and
// dead-letters at MaxDeliver itself; see the package documentation), and a
// BackOff that spaces redeliveries after a crash.
//
// JetStream replaces AckWait with BackOff[n-1] for delivery n, so every
// BackOff value is raised to at least AckWait: ACK_WAIT stays the least
// time a handler has before JetStream redelivers behind its back. The list
// is cut to MaxDeliver entries (the server refuses a longer one whenever
// MaxDeliver is finite), and AckWait is reported as the server will store
// it, BackOff[0].
//
// A push consumer delivers to DeliverSubject in queue group Durable, without
// flow control or idle heartbeats: MaxAckPending bounds what it delivers,
// and heartbeats sent to a queue group reach only one of its members, so no
// member could tell from them whether it is still connected to the consumer.
func (c ConsumerSpec) Config() jetstream.ConsumerConfig {
	var backoff []time.Duration
	for i, b := range c.Backoff {
		if c.MaxDeliver > 0 && i >= c.MaxDeliver {
			break
		}
		backoff = append(backoff, max(b, c.AckWait))
	}
	ackWait := c.AckWait
	if len(backoff) > 0 {
		ackWait = backoff[0]
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   "jetstream-bridge sink",
		FilterSubject: c.Filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		BackOff:       backoff,
		MaxAckPending: c.MaxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
	if c.DeliverSubject != "" {
		cfg.DeliverSubject, cfg.DeliverGroup = c.DeliverSubject, c.Durable
	}
	return cfg
}

// differences lists the managed settings in which have differs from want.
func differences(have, want jetstream.ConsumerConfig) []string {
	var d []string
	if have.FilterSubject != want.FilterSubject || len(have.FilterSubjects) > 0 {
		d = append(d, "filter_subject")
	}
	if have.AckPolicy != want.AckPolicy {
		d = append(d, "ack_policy")
	}
	if have.AckWait != want.AckWait {
		d = append(d, "ack_wait")
	}
	if have.MaxDeliver != want.MaxDeliver {
		d = append(d, "max_deliver")
	}
	if !slices.Equal(have.BackOff, want.BackOff) {
		d = append(d, "backoff")
	}
	if have.MaxAckPending != want.MaxAckPending {
		d = append(d, "max_ack_pending")
	}
	if have.DeliverSubject != want.DeliverSubject {
		d = append(d, "deliver_subject")
	}
	if have.DeliverGroup != want.DeliverGroup {
		d = append(d, "deliver_group")
	}
	if have.FlowControl != want.FlowControl || have.IdleHeartbeat != want.IdleHeartbeat {
		d = append(d, "flow_control")
	}
	return d
}

// EnsureConsumer creates the durable consumer, or brings an existing one to
// spec, and returns its info. When the server refuses the update (a setting
// that cannot change, such as the ack policy, or pull versus push), the
// consumer is deleted and created again; unless the filter changed, the new
// one starts after the old one's ack floor, so acknowledged messages are not
// delivered again (anything delivered again would be recognised by the inbox
// anyway). Concurrent callers converge.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, spec ConsumerSpec, log zerolog.Logger) (*jetstream.ConsumerInfo, error) {
	want := spec.Config()
	create := want // what to create when missing; after a deletion, from the old ack floor
	for attempt := 0; ; attempt++ {
		st, err := js.Stream(ctx, spec.Stream)
		if err != nil {
			return nil, fmt.Errorf("look up stream %s: %w", spec.Stream, err)
		}
		have, err := lookupConsumer(ctx, want.DeliverSubject != "",
			func(ctx context.Context) (jetstream.Consumer, error) { return st.Consumer(ctx, spec.Durable) },
			func(ctx context.Context) (jetstream.PushConsumer, error) { return st.PushConsumer(ctx, spec.Durable) })
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			info, err := upsertConsumer(ctx, st, create, false)
			if err != nil {
				if attempt < 5 && errors.Is(err, jetstream.ErrConsumerExists) {
					continue // another sink created it first: compare with theirs
				}
				return nil, fmt.Errorf("create consumer %s: %w", spec.Durable, err)
			}
			ev := log.Info().Str("stream", spec.Stream).Str("consumer", spec.Durable).Str("filter_subject", spec.Filter).
				Dur("ack_wait", want.AckWait)
			if want.DeliverSubject != "" {
				ev = ev.Str("deliver_subject", want.DeliverSubject).Str("deliver_group", want.DeliverGroup)
			}
			ev.Msg("consumer created")
			return info, nil
		}
		if err != nil {
			return nil, fmt.Errorf("look up consumer %s: %w", spec.Durable, err)
		}
		if want.DeliverSubject != "" && have.Config.DeliverSubject != "" {
			if err := keepDelivery(&want, have.Config, spec, log); err != nil {
				return nil, err
			}
		}
		diff := differences(have.Config, want)
		if len(diff) == 0 {
			return have, nil
		}
		upd := have.Config
		upd.FilterSubject, upd.FilterSubjects = want.FilterSubject, nil
		upd.AckPolicy, upd.AckWait, upd.MaxDeliver = want.AckPolicy, want.AckWait, want.MaxDeliver
		upd.BackOff, upd.MaxAckPending = want.BackOff, want.MaxAckPending
		upd.DeliverSubject, upd.DeliverGroup = want.DeliverSubject, want.DeliverGroup
		upd.FlowControl, upd.IdleHeartbeat = want.FlowControl, want.IdleHeartbeat
		info, err := upsertConsumer(ctx, st, upd, true)
		if err == nil {
			log.Info().Str("consumer", spec.Durable).Strs("changed", diff).Msg("consumer updated")
			return info, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) {
			return nil, fmt.Errorf("update consumer %s: %w", spec.Durable, err)
		}
		if attempt >= 5 {
			return nil, fmt.Errorf("update consumer %s: %w", spec.Durable, err)
		}
		fresh := want
		if !slices.Contains(diff, "filter_subject") && have.AckFloor.Stream > 0 {
			fresh.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			fresh.OptStartSeq = have.AckFloor.Stream + 1
		}
		create = fresh
		log.Warn().Err(err).Str("consumer", spec.Durable).Strs("changed", diff).Uint64("start_seq", fresh.OptStartSeq).
			Msg("server refused the consumer update; deleting and recreating the consumer")
		if err := st.DeleteConsumer(ctx, spec.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("delete consumer %s: %w", spec.Durable, err)
		}
		info, err = upsertConsumer(ctx, st, fresh, false)
		if err != nil {
			if errors.As(err, &apiErr) && attempt < 5 {
				// Another sink recreated it first, or the server is still
				// removing the deleted consumer's files: look again.
				log.Debug().Err(err).Msg("consumer recreation raced, retrying")
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
				}
				continue
			}
			return nil, fmt.Errorf("recreate consumer %s: %w", spec.Durable, err)
		}
		log.Warn().Str("consumer", spec.Durable).Msg("consumer recreated")
		return info, nil
	}
}

// ErrDeliverSubjectInUse marks a push durable that delivers elsewhere than
// DELIVER_SUBJECT says: the sink does not move a shared durable's deliver
// subject away from its other subscribers.
var ErrDeliverSubjectInUse = errors.New("the push consumer delivers to another subject")

// keepDelivery makes want, a push consumer, keep the deliver subject and
// queue group of the existing push durable have: both belong to every
// process subscribed to it, not to this one. The deliver subject is taken
// over when the configured one is only the default; a configured one that
// differs is refused.
func keepDelivery(want *jetstream.ConsumerConfig, have jetstream.ConsumerConfig, spec ConsumerSpec, log zerolog.Logger) error {
	if have.DeliverSubject != want.DeliverSubject {
		if !spec.DeliverIsDefault {
			return fmt.Errorf("consumer %s delivers to %q (queue group %q), DELIVER_SUBJECT is %q: %w; "+
				"other subscribers of that subject (more sinks, or Ruby gem push workers) would get nothing if it moved. "+
				"Unset DELIVER_SUBJECT to share %q, or set DELIVER_SUBJECT=%s; to move it on purpose, stop every subscriber and delete the consumer first",
				spec.Durable, have.DeliverSubject, have.DeliverGroup, want.DeliverSubject, ErrDeliverSubjectInUse,
				have.DeliverSubject, have.DeliverSubject)
		}
		log.Info().Str("consumer", spec.Durable).Str("deliver_subject", have.DeliverSubject).Str("deliver_group", have.DeliverGroup).
			Msg("push consumer exists: subscribing to its deliver subject and queue group as they are")
		want.DeliverSubject = have.DeliverSubject
	}
	if have.DeliverGroup != "" {
		want.DeliverGroup = have.DeliverGroup
	}
	return nil
}

// upsertConsumer creates (or with update, updates) a pull or push consumer,
// as cfg says.
func upsertConsumer(ctx context.Context, st jetstream.Stream, cfg jetstream.ConsumerConfig, update bool) (*jetstream.ConsumerInfo, error) {
	if cfg.DeliverSubject != "" {
		upsert := st.CreatePushConsumer
		if update {
			upsert = st.UpdatePushConsumer
		}
		c, err := upsert(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return c.CachedInfo(), nil
	}
	upsert := st.CreateConsumer
	if update {
		upsert = st.UpdateConsumer
	}
	c, err := upsert(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return c.CachedInfo(), nil
}

// lookupConsumer returns a consumer's info, pull or push: the jetstream
// client has a lookup for each kind, and each refuses the other kind. The
// kind expected is tried first.
func lookupConsumer(ctx context.Context, push bool,
	pull func(context.Context) (jetstream.Consumer, error),
	pushed func(context.Context) (jetstream.PushConsumer, error),
) (*jetstream.ConsumerInfo, error) {
	get := func(push bool) (*jetstream.ConsumerInfo, error) {
		if push {
			c, err := pushed(ctx)
			if err != nil {
				return nil, err
			}
			return c.CachedInfo(), nil
		}
		c, err := pull(ctx)
		if err != nil {
			return nil, err
		}
		return c.CachedInfo(), nil
	}
	info, err := get(push)
	if errors.Is(err, jetstream.ErrNotPullConsumer) || errors.Is(err, jetstream.ErrNotPushConsumer) {
		return get(!push)
	}
	return info, err
}

// ConsumerInfo returns the info of a durable consumer, pull or push (one
// consumer info call, two when the consumer is of the other kind than
// push says).
func ConsumerInfo(ctx context.Context, js jetstream.JetStream, stream, durable string, push bool) (*jetstream.ConsumerInfo, error) {
	pull := func(ctx context.Context) (jetstream.Consumer, error) { return js.Consumer(ctx, stream, durable) }
	pushed := func(ctx context.Context) (jetstream.PushConsumer, error) {
		return js.PushConsumer(ctx, stream, durable)
	}
	info, err := lookupConsumer(ctx, push, pull, pushed)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("consumer %s on stream %s: consumer does not exist: %w", durable, stream, err)
	case err != nil:
		return nil, fmt.Errorf("consumer %s on stream %s: %w", durable, stream, err)
	}
	return info, nil
}

// CheckBound reports settings of an existing consumer that defeat the
// sink's guarantees or do not fit the sink's configuration (spec), as
// warnings for the operator.
func CheckBound(info *jetstream.ConsumerInfo, spec ConsumerSpec) []string {
	var w []string
	c := info.Config
	if c.AckPolicy != jetstream.AckExplicitPolicy {
		w = append(w, fmt.Sprintf("ack policy is %s, not explicit: messages may be lost", c.AckPolicy))
	}
	if c.FilterSubject != spec.Filter && !slices.Contains(c.FilterSubjects, spec.Filter) {
		have := c.FilterSubject
		if have == "" {
			have = strings.Join(c.FilterSubjects, ",")
		}
		w = append(w, fmt.Sprintf("filter subject is %q, FILTER_SUBJECT is %q", have, spec.Filter))
	}
	if c.MaxDeliver > 0 && c.MaxDeliver <= spec.MaxDeliver {
		w = append(w, fmt.Sprintf("max_deliver is %d: the server stops redelivering (silently, with an advisory) "+
			"before the sink dead-letters at MAX_DELIVER=%d; set it to -1", c.MaxDeliver, spec.MaxDeliver))
	}
	switch {
	case spec.DeliverSubject == "" && c.DeliverSubject != "":
		w = append(w, fmt.Sprintf("consumer is a push consumer (deliver subject %q), CONSUMER_MODE is pull: "+
			"pull requests fail; run `sink provision` to recreate it", c.DeliverSubject))
	case spec.DeliverSubject != "" && c.DeliverSubject == "":
		w = append(w, "consumer is a pull consumer, CONSUMER_MODE is push: nothing is delivered; run `sink provision` to recreate it")
	case spec.DeliverSubject != "" && spec.DeliverIsDefault && c.DeliverSubject != spec.DeliverSubject:
		// A running sink with AUTO_PROVISION joins the durable's deliver
		// subject and group; without it, it cannot look them up.
		w = append(w, fmt.Sprintf("deliver subject is %q: with AUTO_PROVISION=false set DELIVER_SUBJECT=%s, "+
			"or the sink subscribes to %q and nothing reaches it", c.DeliverSubject, c.DeliverSubject, spec.DeliverSubject))
	case spec.DeliverSubject != "":
		if c.DeliverSubject != spec.DeliverSubject {
			w = append(w, fmt.Sprintf("deliver subject is %q, the sink subscribes to %q: nothing reaches it", c.DeliverSubject, spec.DeliverSubject))
		}
		if c.DeliverGroup != spec.Durable {
			w = append(w, fmt.Sprintf("deliver group is %q, the sink subscribes in queue group %q", c.DeliverGroup, spec.Durable))
		}
	}
	return w
}
