package cdc

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Read coalescing. Postgres sends every change of a transaction as its own
// message and flushes each one, so at a few thousand small transactions per
// second a reader that reads whatever has arrived wakes up two or three times
// per transaction, and so do its publishes and their acks: the system calls
// and context switches then cost more CPU than the events themselves, CPU the
// walsender on the same machine needs to keep up.
//
// Under such a load the reader waits Linger before reading again, so one read
// takes a burst of transactions, which are then published with one write and
// acknowledged in one go. It never waits when the load is low (an event's
// latency is then untouched) nor when a full read buffer is already waiting in
// the socket (a backlog is read at full speed).

const (
	// lingerWindow is how long the arrival rate is measured over.
	lingerWindow = 20 * time.Millisecond
	// lingerMinTxs is how many transactions per Linger make the stream busy
	// enough to wait for more: a wait then gathers at least two.
	lingerMinTxs = 2
	// lingerFull is how many bytes waiting in the socket make a wait useless.
	lingerFull = 8 << 10
)

// linger decides, each time the reader has handled every byte it received,
// whether to wait before the next read.
type linger struct {
	d       time.Duration
	pending func() (int, bool) // bytes waiting in the socket; false: unknown
	sleep   func(time.Duration)
	waits   *atomic.Uint64 // counts the waits; may be nil

	since time.Time // start of the current measuring window
	txs   int       // transactions received in it
	busy  bool      // the last window was busy
}

func newLinger(d time.Duration, conn net.Conn, waits *atomic.Uint64) *linger {
	l := &linger{d: d, sleep: time.Sleep, waits: waits}
	if d > 0 {
		l.pending = socketPending(conn)
	}
	return l
}

// committed counts one transaction received.
func (l *linger) committed() { l.txs++ }

// wait is called when the reader's buffer is empty, before it reads again.
// It reports whether it waited.
func (l *linger) wait(now time.Time) bool {
	if l.d <= 0 || l.pending == nil {
		return false
	}
	if l.since.IsZero() {
		l.since = now
	}
	if el := now.Sub(l.since); el >= lingerWindow {
		l.busy = float64(l.txs)*l.d.Seconds() >= lingerMinTxs*el.Seconds()
		l.since, l.txs = now, 0
	}
	if !l.busy {
		return false
	}
	if n, ok := l.pending(); !ok || n >= lingerFull {
		return false
	}
	if l.waits != nil {
		l.waits.Add(1)
	}
	l.sleep(l.d)
	return true
}

// socketPending returns how to ask how many received bytes wait in conn's
// socket, or nil when that cannot be known (then the reader never waits).
func socketPending(conn net.Conn) func() (int, bool) {
	if c, ok := conn.(interface{ NetConn() net.Conn }); ok { // TLS
		conn = c.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	if _, ok := inq(raw); !ok {
		return nil
	}
	return func() (int, bool) { return inq(raw) }
}
