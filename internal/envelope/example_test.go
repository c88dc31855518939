package envelope_test

import (
	"errors"
	"fmt"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

func ExampleBuilder_Build() {
	b := &envelope.Builder{
		Producer: "shop",
		Subjects: envelope.Subjects{App: "shop", Dest: "billing"},
	}
	row := &envelope.Row{
		EventID:    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
		EventType:  "user.created", // no resource_type: inferred as "user"
		Payload:    []byte(`{"id": 42, "email": "ada@example.com"}`),
		OccurredAt: "2026-11-24 15:08:12.123456+00",
	}
	m, err := b.Build(row, envelope.Position{CommitLSN: 0x16B374D848, TxIndex: 0})
	if err != nil {
		var re *envelope.RowError
		if errors.As(err, &re) {
			fmt.Println("dead-letter:", re.Reason)
		}
		return
	}
	fmt.Println(m.Subject)
	fmt.Println(string(m.Body))
	fmt.Println(m.Header.Get(envelope.HeaderMsgID), m.Header.Get(envelope.HeaderCommitLSN), m.Header.Get(envelope.HeaderTxIndex))
	// Output:
	// shop.sync.billing
	// {"event_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","schema_version":1,"event_type":"user.created","producer":"shop","resource_type":"user","resource_id":"42","occurred_at":"2026-11-24T15:08:12.123456Z","trace_id":"","payload":{"id": 42, "email": "ada@example.com"}}
	// 7c9e6679-7425-40de-944b-e07fc1f90ae7 16/B374D848 0
}

func ExampleParse() {
	body := []byte(`{"event_id":"e1","schema_version":1,"event_type":"created","producer":"myapp",` +
		`"resource_type":"user","resource_id":17,"occurred_at":"2025-08-13T21:00:00Z","trace_id":"abc123","payload":{"id":17}}`)
	env, err := envelope.Parse(body)
	if errors.Is(err, envelope.ErrInvalid) {
		fmt.Println("poison:", err)
		return
	}
	fmt.Println(env.EventID, env.ResourceType, env.ResourceID, string(env.Payload))
	_, err = envelope.Parse([]byte(`{"event_type":"created","payload":{}}`))
	fmt.Println(err)
	// Output:
	// e1 user 17 {"id":17}
	// invalid envelope: missing event_id
}
