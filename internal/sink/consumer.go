package sink

// Binding to the durable consumer for consumption. Creating, updating and
// inspecting it is provisioning (internal/provision).

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrConsumerMissing is returned when the durable consumer does not exist:
// by BindConsumer, and by Sink.Run when pull requests keep finding no
// consumer.
var ErrConsumerMissing = errors.New("consumer does not exist")

// BindConsumer binds to an existing durable pull consumer without changing
// it. It looks the consumer up: a JetStream API call.
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
