// Package audit compares the two sides of the bridge after the fact: the
// outbox with the stream (Relay, behind `relay audit`) and the stream with
// the inbox (Sink, behind `sink audit`). It answers the question an operator
// has after a Postgres failover, a slot recovery or a DLQ replay: did every
// committed event reach the stream once and in commit order, and did every
// stored event reach the handler?
//
// It is a one-shot reader. It never publishes, acks or writes outside its own
// session's temporary table, so it is safe to run beside a live relay and
// sink.
//
// # Reading the stream
//
// stream.go reads the stream with an ordered consumer (an ephemeral consumer
// the client recreates on a gap, no acks, nothing left behind on the server),
// filtered to the subjects in question and started at the window's start
// time (or the stream's first message for `--since all`). It asks for
// headers only: what the audit needs of a message (Nats-Msg-Id, the source
// position in Bridge-Commit-LSN and Bridge-Tx-Index, the dead-letter class)
// is in its headers, and a million bodies need not cross the network. The
// sink audit needs a body only when the headers do not name the event (a
// publisher without Nats-Msg-Id, a replayed dead letter whose id is
// "replay-…"); it fetches that one message by sequence. The reader stops at
// the stream's last sequence when it started, so a busy stream cannot keep
// it running.
//
// # Set differences without holding the sets
//
// The reader hands pages of --page messages (default 1000) to a callback;
// each page is copied into a temporary table of the audit's own Postgres
// session (COPY), and the differences are SQL anti-joins on the database
// side: outbox rows without a message are missing, message ids stored more
// than once are stored twice, stream events without an applied inbox row are
// not applied. Memory is one page, whatever the window holds. The
// temporary table disappears with the session; the database user needs the
// TEMP privilege (granted to PUBLIC by default).
//
// # Order
//
// The relay audit checks commit order while it reads, in O(1) memory: in
// stream-sequence order, the (commit LSN, index in transaction) of this
// producer's messages must never decrease. Each message that is behind the
// highest position seen so far is flagged in the temporary table; after the
// read, a flagged message that repeats an earlier message (same id, or same
// position under another id) is counted as stored twice instead, since a
// late copy is a duplicate the inboxes drop, not a reordering. Messages
// without a position (backfilled rows, other producers) and dead letters
// (a row refused for good may be dead-lettered after the rows behind it
// were published) are not ordered.
//
// # The window
//
// Rows "committed since TIME" are rows with occurred_at >= TIME. occurred_at
// is the inserting transaction's now(), set before commit, so a row is
// stored in the stream at or after its occurred_at; the stream is read from
// TIME minus --margin (default 1m) to absorb clock skew between the database
// and the NATS servers, and for rows whose occurred_at the application set
// itself. Rows younger than --settle (default 10s) before the audit began
// are left out as possibly still in flight: a relay with more lag than that,
// or a transaction open longer, shows its rows as missing until it catches
// up — run `relay status` first, or raise --settle.
//
// The sink audit's window is the stream's own time: messages stored at or
// after TIME and more than --settle before the audit began.
package audit
