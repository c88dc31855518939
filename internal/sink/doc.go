// Package sink applies JetStream events to a Postgres database exactly once:
// consumer → inbox transaction → handler → commit → ack.
//
// One event is one database transaction: the inbox row is inserted (or, when
// the event was seen before, locked) with one upsert that dedupes on
// event_id; the handler (a SQL procedure or function, or an HTTP webhook)
// runs in the same transaction with jetstream_bridge.applying set, so that
// jetstream_publish() inside it does not echo the event back; the row is
// marked processed; the transaction commits; and only then is the message
// acknowledged. A crash between commit and ack redelivers a message whose
// inbox row is already processed: it is acked without a second effect. The
// same holds for several sink processes on one durable consumer. (Exactly
// once holds for the database; a webhook's effect is outside it, so a
// webhook is at-least-once and deduped by its Idempotency-Key: below.)
//
// With a SQL handler, a worker applies the ready heads of several lanes in
// one transaction sent as one pipeline (TxBatch, batch.go): the same
// statements per event, written to fail whenever an event needs more than
// the common path, so that such an event is applied on its own.
//
// With a webhook the call is outside the database, so the inbox rows of
// several lanes' heads share one transaction too (batch.go): the rows are
// inserted (an existing row sends its event down the one-event path before
// any call), the webhook is called for the events in parallel (at most
// CONCURRENCY calls in flight across the workers) while the rows
// wait uncommitted, the rows of failed calls are deleted, and the rest
// commit together before their messages are acked. A failed call is that
// event's attempt, judged as in the one-event path (BACKOFF, MAX_DELIVER,
// dead-lettered at once when permanent). A crash, or a lost connection,
// between the calls and the commit commits none of the rows: the messages
// are redelivered and the webhook is called again with the same
// Idempotency-Key (the event id). Webhooks are therefore at-least-once, and
// the receiver dedupes by that key; what the inbox guarantees is that an
// event whose row committed as processed is never called again.
//
// Files follow the data path:
//
//	consumer.go    binding to the durable pull consumer (creating, updating and
//	               inspecting it is provisioning: internal/provision)
//	source.go      where messages come from (Source): a pull consumer through the
//	               jetstream client, a pull consumer bound without any JetStream API
//	               call, or a push consumer's queue subscription; the pull loop, bounded
//	               in messages and in bytes (MaxHeldBytes);
//	               Msg, the part of a message the sink uses, and its *nats.Msg adapter
//	gap.go         FillGaps: a delivery lost on the way (a gap in the consumer's delivery
//	               sequence) is read from the stream and goes before the message after it
//	dispatch.go    key lanes: per-(resource_type, resource_id) FIFO order, a worker pool,
//	               InProgress heartbeats for every message held
//	sink.go        one message from start to finish: attempts, retries, ack
//	inbox.go       the inbox transaction and the per-key positions (SKIP_STALE)
//	batch.go       several events in one transaction: one round trip (SQL handlers),
//	               one commit around several calls (webhooks)
//	handler*.go    the Handler interface, SQL and HTTP handlers, error classes
//	routes.go      ROUTES_FILE: several handlers chosen by event_type / resource_type / subject
//	dlq.go         dead-lettering, and listing and replaying the DLQ
//	partition.go   PARTITIONS: members with leases, the assignment, claims by epoch, and
//	               the ownership check every apply makes before it commits (Partitioned)
//	trace.go       with a tracer, a span per apply (per event in a batch), the
//	               child of the message's traceparent, and per dead letter
//
// Error classes are decided once, in sink.go, from what the attempt failed
// with; database errors are sorted by SQLSTATE kind (internal/sqlstate; the
// table is in inbox.go). A body that is not an envelope, whose keys exceed
// the inbox's bounds (MaxEventIDLen and the others), or that an inbox
// statement refuses for its values (SQLSTATE classes 22, 23, 54, P0) is
// poison and is dead-lettered at once. A *PermanentError from a handler is
// dead-lettered at once (class handler). Any other handler error, and a
// COMMIT that Postgres refused (a deferred foreign key, unique constraint or
// constraint trigger), is an attempt of that event: retried after BACKOFF,
// in place, while later events of the same key wait, until MAX_DELIVER
// attempts (class exhausted). When a batch's COMMIT is refused, its events
// are applied one by one, each at once, so that only the one at fault waits
// for its retries.
//
// Failures of the bridge's own machinery are not attempts: a database that
// is unreachable, out of resources or shutting down (classes 08, 53, 57,
// 58), a connection lost (a COMMIT without an answer: its outcome is
// unknown, and the retry finds a committed event processed), a shutdown.
// They are retried without counting, so an outage never dead-letters
// healthy events. A deadlock or a serialization failure (class 40) is
// treated the same way: Postgres rolled the transaction back for what ran
// beside it. An inbox statement failing with anything else (an undefined
// column or table, a missing privilege, an internal error, a SQLSTATE
// nobody expects) would fail every event alike: the sink hands its
// messages back and Run returns the error, naming the SQLSTATE, rather
// than retry in silence or dead-letter healthy events.
//
// Attempts are counted across local retries, server redeliveries
// (NumDelivered) and processes (the inbox row's processing_attempts), and the
// sink itself enforces MAX_DELIVER. The consumer's own MaxDeliver is left
// unlimited on purpose: when the server runs out of deliveries it drops the
// message with an advisory nobody hears, which would silently lose messages
// whose deliveries were used up by crashes or shutdown hand-backs.
//
// A message is terminated only once its dead letter is stored. While the
// DLQ publish fails, the message is held and its lane with it (later
// events of its key wait, as behind a retry) and the publish is retried
// with a capped backoff; a dead letter too large for max_payload or for
// the DLQ stream carries a stub body instead of the original (dlq.go).
// Positions for SKIP_STALE are kept per key and producer: LSNs of two
// source databases are never compared.
//
// With restricted credentials the sink makes no JetStream API call:
// RestrictedPull publishes only pull requests to
// $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>, Push only subscribes to the
// push consumer's deliver subject; both settle messages on their $JS.ACK
// reply subjects and dead-letter with a plain JetStream publish.
//
// This package does not read configuration or the environment, and does not
// serve metrics; cmd/sink does, and observes the sink through Observer.
package sink
