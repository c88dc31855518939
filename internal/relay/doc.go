// Package relay streams the outbox table to JetStream: replication slot →
// envelope → publish window → ack → checkpoint → slot confirmation.
//
// Every committed outbox insert becomes one JetStream message, in commit
// order, with its event id as Nats-Msg-Id. The slot's confirmed position
// never passes an event JetStream has not acknowledged: an event is done
// only once it is stored, dead-lettered with the reason, or skipped on
// purpose (USE_DLQ=false, logged and counted), and the checkpoint confirms
// a transaction only when all its events and all earlier ones are done.
// Whatever was not confirmed is streamed again after a restart, and
// JetStream drops the copies by message id.
//
// Files follow the data path:
//
//	relay.go       Options, New, and Run: one goroutine per job (stream, pipeline,
//	               publisher, slot guard, pruning) and the shutdown order
//	start.go       before streaming: provisioning (a hook), the slot's health,
//	               wal_level and the publication (preflight)
//	               the stream (internal/cdc) reads the slot and hands over events
//	pipeline.go    an event becomes a message (internal/envelope) and is submitted
//	               to the publish window (internal/publish); outgoing owns the event
//	               until it is settled, the one place an event is marked done
//	trace.go       with a tracer, one span per event from build to ack, the child
//	               of the row's traceparent; its context goes out in the message
//	deadletter.go  rows that cannot be published as asked (build errors, refusals)
//	               become dead letters carrying the raw row and the reason
//	refuse.go      when a publish that keeps failing is refused for good: no stream
//	               for its subject, or outside the connection's permissions
//	               the checkpoint (internal/checkpoint) turns done events into the
//	               safe position, which the stream confirms
//	slot.go        the slot guard: a lost slot stops the relay (or is left to
//	               recovery), WAL at risk warns
//	record.go      the slot record table: a slot it knows of that is missing was lost
//	recover.go     RecoverSlot: a missing or lost slot is recreated with an exported
//	               snapshot and the rows the stream may lack are republished first
//	prune.go       OUTBOX_RETENTION: deletes rows the slot has confirmed
//	backfill.go    republishes rows from the table through the same decisions
//
// Shutdown reads top to bottom in Run: when ctx ends or a goroutine fails,
// reading stops; the stream waits up to ShutdownTimeout for every event it
// handed over to be done (the pipeline drains the queue, the publisher
// takes the acks), confirms the safe position a last time and returns; then
// the pipeline and the publisher stop.
//
// This package does not read configuration or the environment, open
// connections or serve metrics; cmd/relay does, and observes the relay
// through Observer.
package relay
