package main_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestPayloadArraysDeadletter: with PAYLOAD_ARRAYS=deadletter (a fleet with
// consumers on the Ruby gem, which receive an array payload as {}) a row
// whose payload is a JSON array is dead-lettered with the reason, and the
// object rows around it are published. With the default (allow) the same
// array row is published as it is.
func TestPayloadArraysDeadletter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		setting        string
		published, dlq int
	}{{"PAYLOAD_ARRAYS=deadletter", 2, 1}, {"PAYLOAD_ARRAYS=allow", 3, 0}} {
		t.Run(tc.setting, func(t *testing.T) {
			h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
			p := h.start(tc.setting)
			waitReplicating(t, p)
			const arrID = "aaaaaaaa-0000-4000-8000-000000000001"
			execTx(t, h, []string{
				`INSERT INTO jetstream_outbox_events (resource_type, event_type, payload) VALUES ('ok', 'one', '{"id":1}')`,
				`INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, payload)
  VALUES ($1, 'list', 'many', '[{"id":1},{"id":2}]')`,
				`INSERT INTO jetstream_outbox_events (resource_type, event_type, payload) VALUES ('ok', 'two', '{"id":2}')`,
			}, arrID)
			h.waitCount(subjAB, tc.published, 60*time.Second, p)
			if tc.dlq == 0 {
				var found bool
				for _, m := range h.readStream(subjAB) {
					var body struct {
						EventID string          `json:"event_id"`
						Payload json.RawMessage `json:"payload"`
					}
					if json.Unmarshal(m.Data(), &body) == nil && body.EventID == arrID {
						found = string(body.Payload) == `[{"id": 1}, {"id": 2}]` || string(body.Payload) == `[{"id":1},{"id":2}]`
						if !found {
							t.Fatalf("array payload published as %s", body.Payload)
						}
					}
				}
				if !found {
					t.Fatalf("array row not published with PAYLOAD_ARRAYS=allow")
				}
				return
			}
			h.waitCount(appA+".sync.dlq", tc.dlq, 60*time.Second, p)
			if reason := h.deadLetterReasons()[arrID]; !strings.Contains(reason, "PAYLOAD_ARRAYS=deadletter") {
				t.Fatalf("dead letter reason %q does not name PAYLOAD_ARRAYS=deadletter", reason)
			}
		})
	}
}
