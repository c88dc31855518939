// Package provision creates and brings up to date everything the bridge
// needs before events can flow, and nothing that moves events: it is called
// by `relay provision`, `sink provision`, and at start with
// AUTO_PROVISION=true.
//
// Files follow the order in which the relay provisions:
//
//	schema.go    the outbox and inbox schemas (the SQL in migrations/, rendered
//	             with the configured names) applied in one transaction under an
//	             advisory lock; the outbox schema creates the publication
//	columns.go   what an existing outbox or inbox table (the Ruby gem's, an
//	             app's own) lacks for the bridge, checked at start (CheckTable)
//	             and fixed first by provisioning with reviewable statements
//	slot.go      the permanent pgoutput replication slot, created after the
//	             publication so decoding never starts before it is visible
//	stream.go    the JetStream stream: created (STREAM_RETENTION), or widened to
//	             the wanted subjects without ever taking one another stream
//	             already stores; never a '>' tail, which would swallow push
//	             deliver subjects; the gem peer's subjects covered
//	consumer.go  the sink's durable consumer, pull or push: created, updated, or
//	             recreated from its ack floor when the server refuses an update;
//	             reading it back (ConsumerInfo) and judging an existing one
//	             against the configuration (CheckBound)
//
// The line with internal/sink: binding to the durable and pulling from or
// subscribing to it is consumption and stays in the sink (sink.BindConsumer,
// the Sources). Everything that creates, changes or inspects the durable's
// settings is here. Likewise the relay reads and checks its slot at run
// time (internal/cdc); only its creation is here.
//
// This package reads no configuration: cmd/relay and cmd/sink turn their
// configuration into the specs taken here.
package provision
