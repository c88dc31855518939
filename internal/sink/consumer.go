package sink

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

// ConsumerSpec is the durable pull consumer a sink wants.
type ConsumerSpec struct {
	Stream        string
	Durable       string
	Filter        string
	AckWait       time.Duration
	MaxDeliver    int             // the sink's MAX_DELIVER; bounds the BackOff list
	Backoff       []time.Duration // the sink's BACKOFF
	MaxAckPending int
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
	return jetstream.ConsumerConfig{
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
	return d
}

// EnsureConsumer creates the durable consumer, or brings an existing one to
// spec. When the server refuses the update (a setting that cannot change,
// such as the ack policy), the consumer is deleted and created again; unless
// the filter changed, the new one starts after the old one's ack floor, so
// acknowledged messages are not delivered again (anything delivered again
// would be recognised by the inbox anyway). Concurrent callers converge.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, spec ConsumerSpec, log zerolog.Logger) (jetstream.Consumer, error) {
	want := spec.Config()
	create := want // what to create when missing; after a deletion, from the old ack floor
	for attempt := 0; ; attempt++ {
		st, err := js.Stream(ctx, spec.Stream)
		if err != nil {
			return nil, fmt.Errorf("look up stream %s: %w", spec.Stream, err)
		}
		cons, err := st.Consumer(ctx, spec.Durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			c, err := st.CreateConsumer(ctx, create)
			if err != nil {
				if attempt < 5 && errors.Is(err, jetstream.ErrConsumerExists) {
					continue // another sink created it first: compare with theirs
				}
				return nil, fmt.Errorf("create consumer %s: %w", spec.Durable, err)
			}
			log.Info().Str("stream", spec.Stream).Str("consumer", spec.Durable).Str("filter_subject", spec.Filter).
				Dur("ack_wait", want.AckWait).Msg("consumer created")
			return c, nil
		}
		if err != nil {
			return nil, fmt.Errorf("look up consumer %s: %w", spec.Durable, err)
		}
		have := cons.CachedInfo()
		diff := differences(have.Config, want)
		if len(diff) == 0 {
			return cons, nil
		}
		upd := have.Config
		upd.FilterSubject, upd.FilterSubjects = want.FilterSubject, nil
		upd.AckPolicy, upd.AckWait, upd.MaxDeliver = want.AckPolicy, want.AckWait, want.MaxDeliver
		upd.BackOff, upd.MaxAckPending = want.BackOff, want.MaxAckPending
		c, err := st.UpdateConsumer(ctx, upd)
		if err == nil {
			log.Info().Str("consumer", spec.Durable).Strs("changed", diff).Msg("consumer updated")
			return c, nil
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
		c, err = st.CreateConsumer(ctx, fresh)
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
		return c, nil
	}
}

// ErrConsumerMissing is returned by BindConsumer when the durable does not
// exist.
var ErrConsumerMissing = errors.New("consumer does not exist")

// BindConsumer binds to an existing durable consumer without changing it.
func BindConsumer(ctx context.Context, js jetstream.JetStream, stream, durable string) (jetstream.Consumer, error) {
	c, err := js.Consumer(ctx, stream, durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("bind consumer %s on stream %s: %w (%v)", durable, stream, ErrConsumerMissing, err)
	case err != nil:
		return nil, fmt.Errorf("bind consumer %s on stream %s: %w", durable, stream, err)
	}
	return c, nil
}

// CheckBound reports settings of a consumer bound (not provisioned) that
// defeat the sink's guarantees, as warnings for the operator.
func CheckBound(info *jetstream.ConsumerInfo, filter string, maxDeliver int) []string {
	var w []string
	c := info.Config
	if c.AckPolicy != jetstream.AckExplicitPolicy {
		w = append(w, fmt.Sprintf("ack policy is %s, not explicit: messages may be lost", c.AckPolicy))
	}
	if c.FilterSubject != filter && !slices.Contains(c.FilterSubjects, filter) {
		have := c.FilterSubject
		if have == "" {
			have = strings.Join(c.FilterSubjects, ",")
		}
		w = append(w, fmt.Sprintf("filter subject is %q, FILTER_SUBJECT is %q", have, filter))
	}
	if c.MaxDeliver > 0 && c.MaxDeliver <= maxDeliver {
		w = append(w, fmt.Sprintf("max_deliver is %d: the server stops redelivering (silently, with an advisory) "+
			"before the sink dead-letters at MAX_DELIVER=%d; set it to -1", c.MaxDeliver, maxDeliver))
	}
	return w
}

// fetch pulls messages into the dispatcher until ctx ends, never holding more
// than maxHeld. It returns an error only when the consumer is gone.
func (s *Sink) fetch(ctx context.Context, d *dispatcher) error {
	limit := s.maxHeld - s.batchSize
	backoff := 250 * time.Millisecond
	gone := 0
	for ctx.Err() == nil {
		if !d.waitRoom(ctx, limit) {
			return nil
		}
		batch, err := s.cons.Fetch(s.batchSize, jetstream.FetchMaxWait(s.fetchWait))
		if err == nil {
			for msg := range batch.Messages() {
				d.add(newItem(msg))
			}
			err = batch.Error()
		}
		if err == nil || errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, context.DeadlineExceeded) {
			s.bound.Store(true)
			backoff, gone = 250*time.Millisecond, 0
			continue
		}
		s.bound.Store(false)
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			if gone++; gone >= 3 {
				return fmt.Errorf("consume: %w", err)
			}
		}
		if ctx.Err() == nil {
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("fetch failed, retrying")
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

// waitRoom waits until at most limit messages are held; false if ctx ends.
func (d *dispatcher) waitRoom(ctx context.Context, limit int) bool {
	for {
		if d.held() <= limit {
			return true
		}
		select {
		case <-d.room:
		case <-ctx.Done():
			return false
		}
	}
}
