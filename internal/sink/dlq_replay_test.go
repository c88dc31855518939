package sink_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// A stub stands in for a message too large to dead-letter whole: replaying
// it would publish the stub as the event, so replay refuses it.
func TestReplayMessage_RefusesStubs(t *testing.T) {
	h := nats.Header{}
	h.Set(envelope.HeaderOriginalSubject, "system_a.sync.system_b")
	for _, tc := range []struct {
		name string
		body string
		stub bool
	}{
		{"sink stub", `{"event_id":"e1","subject":"system_a.sync.system_b","size":1048200,"reason":"x","payload_omitted":true}`, true},
		{"relay stub", `{"event_id":"e1","event_type":"created","producer":"system_a","payload_omitted":true,"size":9000000}`, true},
		{"envelope", `{"event_id":"e1","event_type":"created","payload":{"payload_omitted":true}}`, false},
		{"flag false", `{"event_id":"e1","payload_omitted":false}`, false},
		{"not json", `payload_omitted`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dl := &sink.DeadLetter{Sequence: 7, EventID: "e1", OriginalSubject: "system_a.sync.system_b", Header: h, Data: []byte(tc.body)}
			_, err := sink.ReplayMessage(dl)
			if got := errors.Is(err, sink.ErrStubDeadLetter); got != tc.stub {
				t.Fatalf("ReplayMessage err=%v, stub refusal %v, want %v", err, got, tc.stub)
			}
			if !tc.stub && err != nil {
				t.Fatalf("ReplayMessage: %v", err)
			}
		})
	}
}
