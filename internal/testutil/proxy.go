package testutil

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections to a target. It can drop traffic without
// closing sockets, as a network partition does: DropUpstream swallows what
// clients send, Blackhole swallows both directions.
type Proxy struct {
	Addr         string // host:port to connect to instead of the target
	dropUp       atomic.Bool
	dropDown     atomic.Bool
	down         atomic.Bool
	mu           sync.Mutex
	conns        []net.Conn
	accepted     atomic.Int64
	listenerDone chan struct{}
	filter       func(subject string, data []byte) bool // drops server messages; set by StartFilterProxy
	filtered     atomic.Int64
}

// StartProxy listens on a free loopback port and forwards to target
// (host:port). It is closed by tb.Cleanup.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	return startProxy(tb, target, nil)
}

// StartFilterProxy is a Proxy in front of a NATS server that reads the
// protocol the server sends its clients and drops every message (MSG or
// HMSG) for which drop returns true, as if the server never sent it; data
// is the message's headers and payload. Dropped counts them.
func StartFilterProxy(tb testing.TB, target string, drop func(subject string, data []byte) bool) *Proxy {
	tb.Helper()
	return startProxy(tb, target, drop)
}

// Dropped is how many messages a filter proxy dropped.
func (p *Proxy) Dropped() int64 { return p.filtered.Load() }

func startProxy(tb testing.TB, target string, filter func(string, []byte) bool) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), listenerDone: make(chan struct{}), filter: filter}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		<-p.listenerDone
		p.CloseConns()
		wg.Wait()
	})
	go func() {
		defer close(p.listenerDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.accepted.Add(1)
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(u, c, &p.dropUp) }()
			if p.filter != nil {
				go func() { defer wg.Done(); p.pipeFiltered(c, u) }()
			} else {
				go func() { defer wg.Done(); p.pipe(c, u, &p.dropDown) }()
			}
		}
	}()
	return p
}

// pipe copies src to dst, discarding while drop is set. A close seen while
// dropping is swallowed too: across a partition nobody learns the peer left.
func (p *Proxy) pipe(dst, src net.Conn, drop *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !drop.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if !drop.Load() {
				dst.Close()
			}
			if err != io.EOF {
				src.Close()
			}
			return
		}
	}
}

// pipeFiltered copies what the server src sends to the client dst one
// protocol line at a time, leaving out the messages p.filter drops.
func (p *Proxy) pipeFiltered(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	r := bufio.NewReaderSize(src, 64<<10)
	w := bufio.NewWriterSize(dst, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		line = bytes.Clone(line)
		var data []byte
		fields := bytes.Fields(line)
		if len(fields) >= 4 && (string(fields[0]) == "MSG" || string(fields[0]) == "HMSG") {
			// MSG <subject> <sid> [reply] <size>, HMSG ... <header size> <size>.
			size, err := strconv.Atoi(string(fields[len(fields)-1]))
			if err != nil {
				return
			}
			data = make([]byte, size+2) // and its \r\n
			if _, err := io.ReadFull(r, data); err != nil {
				return
			}
			if p.filter(string(fields[1]), data[:size]) {
				p.filtered.Add(1)
				continue
			}
		}
		if _, err := w.Write(line); err != nil {
			return
		}
		if _, err := w.Write(data); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// DropUpstream makes the proxy swallow (or again forward) what clients send.
func (p *Proxy) DropUpstream(on bool) { p.dropUp.Store(on) }

// Blackhole makes the proxy swallow (or again forward) both directions.
func (p *Proxy) Blackhole(on bool) {
	p.dropUp.Store(on)
	p.dropDown.Store(on)
}

// Down makes the target look stopped: existing connections are cut and new
// ones refused until Up.
func (p *Proxy) Down() {
	p.down.Store(true)
	p.CloseConns()
}

// Up accepts connections again.
func (p *Proxy) Up() { p.down.Store(false) }

// CloseConns closes every connection made so far (both sides).
func (p *Proxy) CloseConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Accepted counts the connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }
