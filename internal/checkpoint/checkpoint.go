// Package checkpoint decides which WAL position the relay may confirm to
// Postgres.
//
// Transactions are registered in commit order as they are read from the
// replication stream; each event of a transaction is marked done once
// JetStream has acknowledged it (or it was dead-lettered). The safe position
// is the end LSN of the newest transaction that is complete and whose every
// predecessor is complete too. Confirming anything beyond it could make
// Postgres skip an unacknowledged event after a restart; confirming less only
// causes re-sends, which JetStream deduplicates by message id.
//
// The package knows nothing of JetStream or Postgres connections: it deals in
// LSNs and counts.
package checkpoint

import (
	"sync"

	"github.com/jackc/pglogrepl"
)

// Tracker tracks open transactions. It is safe for concurrent use: the
// replication reader registers transactions while the publisher's ack loop
// marks events done.
type Tracker struct {
	mu    sync.Mutex
	queue []*Tx // open or completed-but-blocked transactions, in commit order
	head  int   // index of the first live entry in queue
	safe  pglogrepl.LSN
}

// Tx is one source transaction in flight.
type Tx struct {
	t       *Tracker
	end     pglogrepl.LSN
	pending int
	closed  bool
}

// New returns a tracker whose safe position starts at start (the slot's
// confirmed position, or 0 when unknown).
func New(start pglogrepl.LSN) *Tracker {
	return &Tracker{safe: start}
}

// Begin registers a transaction at the tail. Events are added with Add and the
// transaction is closed with Commit (or Abandon).
func (t *Tracker) Begin() *Tx {
	tx := &Tx{t: t}
	t.mu.Lock()
	t.queue = append(t.queue, tx)
	t.mu.Unlock()
	return tx
}

// Add registers one more event of tx that must be acknowledged.
func (tx *Tx) Add() {
	tx.t.mu.Lock()
	tx.pending++
	tx.t.mu.Unlock()
}

// Done marks one event of tx as acknowledged.
func (tx *Tx) Done() {
	tx.t.mu.Lock()
	tx.pending--
	if tx.pending < 0 {
		tx.t.mu.Unlock()
		panic("checkpoint: Done called more often than Add")
	}
	tx.t.advance()
	tx.t.mu.Unlock()
}

// Commit closes tx with the end LSN of its commit record: once its events and
// all earlier ones are done, that position is safe.
func (tx *Tx) Commit(end pglogrepl.LSN) {
	tx.t.mu.Lock()
	tx.end, tx.closed = end, true
	tx.t.advance()
	tx.t.mu.Unlock()
}

// Abandon closes a transaction whose commit was never received (the
// replication connection dropped part-way). Its events still count until they
// are done, but it never advances the safe position: Postgres will send the
// whole transaction again.
func (tx *Tx) Abandon() { tx.Commit(0) }

// advance pops completed transactions from the head. Called with mu held.
func (t *Tracker) advance() {
	for t.head < len(t.queue) {
		tx := t.queue[t.head]
		if !tx.closed || tx.pending > 0 {
			break
		}
		if tx.end > t.safe {
			t.safe = tx.end
		}
		t.queue[t.head] = nil
		t.head++
	}
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
	} else if t.head > 1024 && t.head*2 > len(t.queue) {
		n := copy(t.queue, t.queue[t.head:])
		clear(t.queue[n:])
		t.queue, t.head = t.queue[:n], 0
	}
}

// Safe is the highest LSN that may be confirmed.
func (t *Tracker) Safe() pglogrepl.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.safe
}

// Idle reports whether every registered transaction is complete.
func (t *Tracker) Idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.head == len(t.queue)
}

// Open returns the number of transactions not yet complete.
func (t *Tracker) Open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.queue) - t.head
}

// Skip raises the safe position to lsn when nothing is in flight, so an idle
// outbox does not pin WAL. It reports whether it did.
func (t *Tracker) Skip(lsn pglogrepl.LSN) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head != len(t.queue) {
		return false
	}
	if lsn > t.safe {
		t.safe = lsn
	}
	return true
}

// Rebase moves the safe position to lsn, down as well as up, when nothing is
// in flight, and reports whether it did. A recreated replication slot starts
// at its own consistent point: positions reached on the slot it replaces
// may lie beyond WAL the new slot still has to stream (a promoted standby
// never received the old primary's last records), and confirming one of
// them there would skip events.
func (t *Tracker) Rebase(lsn pglogrepl.LSN) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.head != len(t.queue) {
		return false
	}
	t.safe = lsn
	return true
}
