package tracing

import "go.opentelemetry.io/otel/attribute"

// Span attributes. The messaging.* keys are OpenTelemetry's semantic
// conventions; the jetstream_bridge.* keys are the bridge's own.
const (
	MessagingSystem      = attribute.Key("messaging.system")           // "nats"
	MessagingDestination = attribute.Key("messaging.destination.name") // the subject
	MessagingMessageID   = attribute.Key("messaging.message.id")       // the event id
	MessagingOperation   = attribute.Key("messaging.operation.type")   // send, process

	CommitLSN  = attribute.Key("jetstream_bridge.commit_lsn")  // the source transaction's commit LSN, 16/B374D848
	TxIndex    = attribute.Key("jetstream_bridge.tx_index")    // the event's index in its transaction
	Outcome    = attribute.Key("jetstream_bridge.outcome")     // relay: stored, duplicate, dead_lettered, skipped
	EventType  = attribute.Key("jetstream_bridge.event_type")  // the envelope's event_type
	Handler    = attribute.Key("jetstream_bridge.handler")     // the sink's handler (URL without query, or schema.name)
	Attempt    = attribute.Key("jetstream_bridge.attempt")     // the sink's attempt number, 1 the first time
	Status     = attribute.Key("jetstream_bridge.status")      // sink: processed, failed, dead, duplicate, stale
	StreamSeq  = attribute.Key("jetstream_bridge.stream_seq")  // the message's stream sequence
	BatchSize  = attribute.Key("jetstream_bridge.batch_size")  // events applied in the same transaction
	ErrorClass = attribute.Key("jetstream_bridge.error_class") // a dead letter's Bridge-Error-Class
)

// System is messaging.system for every span of the bridge.
var System = MessagingSystem.String("nats")
