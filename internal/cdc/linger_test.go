package cdc

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fakeLinger is a linger whose socket holds *pending bytes and whose sleeps
// are recorded instead of taken.
func fakeLinger(d time.Duration, pending *int) (*linger, *[]time.Duration) {
	var slept []time.Duration
	l := &linger{d: d, pending: func() (int, bool) { return *pending, true }, waits: new(atomic.Uint64)}
	l.sleep = func(d time.Duration) { slept = append(slept, d) }
	return l, &slept
}

// feed simulates the reader at txPerMs transactions per millisecond for ms
// milliseconds, asking to wait once per millisecond; it returns how many
// times the linger waited.
func feed(l *linger, start time.Time, txPerMs, ms int) (waited int, end time.Time) {
	now := start
	for range ms {
		for range txPerMs {
			l.committed()
		}
		now = now.Add(time.Millisecond)
		if l.wait(now) {
			waited++
		}
	}
	return waited, now
}

func TestLingerWaitsOnlyUnderLoad(t *testing.T) {
	pending := 0
	l, slept := fakeLinger(time.Millisecond, &pending)
	start := time.Unix(1_700_000_000, 0)

	// One transaction per millisecond: a wait would gather one; never wait.
	if waited, _ := feed(l, start, 1, 200); waited != 0 {
		t.Fatalf("at 1 tx per linger it waited %d times, want 0", waited)
	}
	// Five per millisecond: after one measuring window, wait every time.
	waited, now := feed(l, start.Add(time.Second), 5, 200)
	if waited < 150 {
		t.Fatalf("at 5 tx per linger it waited %d of 200 times, want nearly all", waited)
	}
	if got := l.waits.Load(); got != uint64(len(*slept)) || got != uint64(waited) {
		t.Fatalf("wait counter %d, slept %d times, waited %d", got, len(*slept), waited)
	}
	for _, d := range *slept {
		if d != time.Millisecond {
			t.Fatalf("slept %s, want the linger 1ms", d)
		}
	}
	// A full read buffer already waiting in the socket: read at once.
	pending = lingerFull
	if w, _ := feed(l, now, 5, 50); w != 0 {
		t.Fatalf("with %d bytes waiting it waited %d times, want 0", pending, w)
	}
	pending = lingerFull - 1
	if w, _ := feed(l, now.Add(time.Second), 5, 50); w == 0 {
		t.Fatal("with less than a read buffer waiting under load it never waited")
	}
	// The load drops: the wait stops after one window.
	if w, _ := feed(l, now.Add(2*time.Second), 0, 200); w > int(lingerWindow/time.Millisecond)+1 {
		t.Fatalf("idle stream: waited %d times, want at most one window's worth", w)
	}
}

func TestLingerOffOrBlind(t *testing.T) {
	pending := 0
	off, _ := fakeLinger(0, &pending)
	if w, _ := feed(off, time.Now(), 50, 100); w != 0 {
		t.Fatalf("Linger 0 waited %d times", w)
	}
	blind, _ := fakeLinger(time.Millisecond, &pending)
	blind.pending = func() (int, bool) { return 0, false }
	if w, _ := feed(blind, time.Now(), 50, 100); w != 0 {
		t.Fatalf("a linger that cannot see the socket waited %d times", w)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if newLinger(time.Millisecond, a, nil).pending != nil {
		t.Fatal("a connection without a socket must never wait")
	}
}

func TestSocketPendingCountsReceivedBytes(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the socket's input queue is read on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	pending := socketPending(server)
	if pending == nil {
		t.Fatal("no way to read a TCP socket's input queue")
	}
	if n, ok := pending(); !ok || n != 0 {
		t.Fatalf("nothing sent: pending %d, %v", n, ok)
	}
	if _, err := client.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, ok := pending()
		if ok && n == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 1000 bytes sent: pending %d, %v", n, ok)
		}
		time.Sleep(time.Millisecond)
	}
	buf := make([]byte, 400)
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	if n, _ := pending(); n != 600 {
		t.Fatalf("after reading 400 of 1000: pending %d, want 600", n)
	}
}
