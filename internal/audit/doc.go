// Package audit checks, after the fact, that what the bridge promises held:
// every committed outbox row is in the stream once and in commit order (the
// relay side), and every stream message for a sink is in its inbox (the sink
// side). Operators run it after a failover, a slot recovery or a DLQ replay,
// through `relay audit` and `sink audit`.
//
// It is responsible for comparing the two sides and saying what differs; it
// is not responsible for repairing anything (`relay backfill` and
// `sink dlq replay` do that) and never writes to the stream or to the
// application's tables.
//
// # How it compares without loading everything
//
// stream.go reads the stream with an ephemeral ordered consumer that asks
// for headers only, so message bodies never cross the wire: the message id
// (Nats-Msg-Id, the event id), the stream sequence, the subject, the store
// time and the source position (Bridge-Commit-LSN, Bridge-Tx-Index) are all
// in the headers and the reply subject. It reads up to the stream's last
// sequence as of the start, in pages of Options.Page messages.
//
// Each page is copied (COPY FROM) into a temporary table of the audit's own
// database session; the set differences are then anti-joins that Postgres
// runs, spilling to disk if it must. Memory in the audit process is one
// page, whatever the number of events. The order check needs no table: in
// stream-sequence order the source position must never decrease, so it is
// checked while reading with the previous position as the only state.
//
// # Relay side (relay.go)
//
// The rows audited are those visible in one REPEATABLE READ snapshot taken
// before the stream is read, with occurred_at at or after --since.
// occurred_at is the inserting transaction's start time, not its commit
// time, so the stream is read from --since minus a margin (clock skew
// between the database and the NATS server; messages are stored after their
// row was inserted). A row committed just before the snapshot may still be
// on its way to the stream: when rows look missing, the audit waits --settle,
// reads the stream's new tail and looks again; only rows still absent are a
// gap. A row the relay dead-lettered is on the DLQ subject with message id
// "dlq-" + its event id; it counts as dead-lettered, not missing.
//
// # Sink side (sink.go)
//
// The messages audited are those on the sink's filter subject(s) stored at
// or after --since. Each distinct event id is classified by its inbox row:
// processed = applied, stale, dead (or a copy on the sink's DLQ subject), and
// anything else (no row, received, processing, failed) = not applied. The
// sink may simply be behind: when anything is not applied the audit waits
// --settle and classifies again before calling it a gap.
//
// # Verdict
//
// A gap (rows missing from the stream, messages not applied) is an error of
// type *GapError, which the binaries turn into exit status 3; a runtime
// failure exits 1. Duplicates, order violations, dead and stale events are
// reported but are not gaps: the inbox absorbs duplicates, the DLQ accounts
// for dead events, and stale events were discarded on purpose (SKIP_STALE).
// --strict makes them exit 3 as well.
package audit
