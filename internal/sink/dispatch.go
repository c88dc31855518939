package sink

import (
	"strconv"
	"sync"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// item is one fetched message held by this process until it is acked,
// terminated or handed back.
type item struct {
	msg       Msg
	env       *envelope.Envelope // nil when poison
	poison    error              // why the body is not an envelope
	key       string             // lane key
	stream    string
	seq       uint64 // stream sequence
	delivered int    // server deliveries, 1 the first time
	pos       envelope.Position
	hasPos    bool
	size      int64     // body and header bytes, counted against MaxHeldBytes
	stored    time.Time // when the stream stored it (metadata); zero if unknown
	received  time.Time // when this process received it (only with a LatencyObserver)
	hdrJSON   []byte    // headers as a JSON object, built on first use
	stmt      string    // the handler as one SQL statement, for batches; see Sink.batchable
	call      Handler   // the handler as a call outside the database, for batches
	batch     int8      // 0 not decided yet, batchSQL or batchCall, -1 not

	next     *item // in its lane
	finished bool  // no heartbeat after this; guarded by dispatcher.mu
}

// newItem parses what every later step needs, once. The arrival time is
// read only when an observer follows latencies.
func (s *Sink) newItem(msg Msg) *item {
	it := &item{msg: msg}
	if s.lat != nil {
		it.received = time.Now()
	}
	if meta, err := msg.Metadata(); err == nil {
		it.stream, it.seq, it.delivered, it.stored = meta.Stream, meta.Sequence.Stream, int(meta.NumDelivered), meta.Timestamp
	}
	it.env, it.poison = parseEnvelope(msg.Data())
	it.size = int64(len(msg.Data()))
	for k, vs := range msg.Headers() {
		for _, v := range vs {
			it.size += int64(len(k) + len(v) + 4) // "k: v\r\n"
		}
	}
	it.pos, it.hasPos = envelope.ParsePosition(msg.Headers())
	switch {
	case it.poison != nil:
		it.key = "\x00seq\x00" + strconv.FormatUint(it.seq, 10) // alone in its lane
	case msg.Headers().Get(envelope.HeaderOrderingKey) != "":
		// The relay partitions by it too (envelope.Partition).
		it.key = "\x00ok\x00" + msg.Headers().Get(envelope.HeaderOrderingKey)
	case it.env.ResourceID == "":
		it.key = "\x00id\x00" + it.env.EventID // no key: no ordering constraint
	default:
		it.key = it.env.ResourceType + "\x00" + it.env.ResourceID
	}
	return it
}

// eventID returns the event id, or for poison the Nats-Msg-Id, for logs.
func (it *item) eventID() string {
	if it.env != nil {
		return it.env.EventID
	}
	return it.msg.Headers().Get(envelope.HeaderMsgID)
}

// positionArgs returns the commit_lsn and tx_index parameters: NULL when the
// message carries no source position.
func (it *item) positionArgs() (lsn, txIndex any) {
	if !it.hasPos {
		return nil, nil
	}
	return it.lsnArg(), it.pos.TxIndex
}

// lsnArg is the commit LSN as a pg_lsn parameter: the header's text, which
// ParsePosition validated, so that it is not formatted again per event.
func (it *item) lsnArg() string { return it.msg.Headers().Get(envelope.HeaderCommitLSN) }

// headersJSON returns the message headers as a JSON object, a value for a
// single-valued header and an array otherwise.
func (it *item) headersJSON() []byte {
	if it.hdrJSON != nil {
		return it.hdrJSON
	}
	h := it.msg.Headers()
	b := make([]byte, 0, 64*len(h)+2)
	b = append(b, '{')
	first := true
	for k, vs := range h {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = envelope.AppendJSONBString(b, k)
		b = append(b, ':')
		if len(vs) == 1 {
			b = envelope.AppendJSONBString(b, vs[0])
			continue
		}
		b = append(b, '[')
		for i, v := range vs {
			if i > 0 {
				b = append(b, ',')
			}
			b = envelope.AppendJSONBString(b, v)
		}
		b = append(b, ']')
	}
	it.hdrJSON = append(b, '}')
	return it.hdrJSON
}

// lane is the FIFO of one key's held messages. At most one worker owns a
// lane at a time and works on its head; the rest wait behind it, so one key's
// events are applied in stream order, retries included.
type lane struct {
	key        string
	head, tail *item
	busy       bool  // a worker owns it
	queued     bool  // in the ready list
	nextReady  *lane // ready list link
}

// dispatcher holds fetched messages in key lanes and hands lanes to workers.
// Lanes whose head is free wait in a ready list, served in FIFO order so that
// no key starves another.
type dispatcher struct {
	mu        sync.Mutex
	cond      sync.Cond
	lanes     map[string]*lane
	readyHead *lane
	readyTail *lane
	count     int   // messages held
	bytes     int64 // their sizes (item.size)
	idle      int   // workers waiting in next
	waking    int   // of them, woken and not yet running
	closing   bool
	room      chan struct{} // signalled when count drops
	// probe, when set (tests), sees count and bytes after every add.
	probe func(count int, bytes int64)
}

func newDispatcher() *dispatcher {
	d := &dispatcher{lanes: map[string]*lane{}, room: make(chan struct{}, 1)}
	d.cond.L = &d.mu
	return d
}

// add appends a fetched message to its lane.
func (d *dispatcher) add(it *item) {
	d.mu.Lock()
	l := d.lanes[it.key]
	if l == nil {
		l = &lane{key: it.key}
		d.lanes[it.key] = l
	}
	if l.tail == nil {
		l.head, l.tail = it, it
	} else {
		l.tail.next, l.tail = it, it
	}
	d.count++
	d.bytes += it.size
	if d.probe != nil {
		d.probe(d.count, d.bytes)
	}
	if !l.busy && !l.queued {
		d.pushReady(l)
		d.wake()
	}
	d.mu.Unlock()
}

// wake wakes a waiting worker for the ready lanes, unless one is already
// on its way: it takes every lane ready by the time it runs (up to its
// batch), and wakes the next if it leaves some behind. So a burst of
// messages wakes one worker per batch rather than one per message, and
// batches fill instead of several workers each taking one or two events.
// d.mu is held.
func (d *dispatcher) wake() {
	if d.idle > d.waking {
		d.waking++
		d.cond.Signal()
	}
}

func (d *dispatcher) pushReady(l *lane) {
	l.queued = true
	if d.readyTail == nil {
		d.readyHead, d.readyTail = l, l
	} else {
		d.readyTail.nextReady, d.readyTail = l, l
	}
}

// claim is a lane a worker owns, with the head it works on.
type claim struct {
	lane *lane
	it   *item
}

// next blocks until a lane is ready, takes ownership of it and returns it
// with its head in buf[:1]. When batchable(head) and max > 1, it also takes
// the lanes ready right behind it whose heads are batchable, up to max
// claims and maxBatchBytes, without waiting for more: under load a worker applies several
// keys' events in one transaction, with none it applies one at once. It
// returns nil once the dispatcher is closing. batchable runs under d.mu and
// sets item.batch; a batch holds heads of one kind.
func (d *dispatcher) next(buf []claim, max int, batchable func(*item) bool) []claim {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.readyHead == nil && !d.closing {
		d.idle++
		d.cond.Wait()
		d.idle--
		if d.waking > 0 {
			d.waking--
		}
	}
	if d.closing {
		return nil
	}
	l := d.popReady()
	buf = append(buf[:0], claim{l, l.head})
	if max > 1 && batchable != nil && batchable(l.head) {
		size := l.head.size
		for len(buf) < max && d.readyHead != nil && batchable(d.readyHead.head) && d.readyHead.head.batch == l.head.batch &&
			size+d.readyHead.head.size <= maxBatchBytes {
			l := d.popReady()
			size += l.head.size
			buf = append(buf, claim{l, l.head})
		}
	}
	if d.readyHead != nil {
		d.wake()
	}
	return buf
}

// maxBatchBytes bounds the messages of one batch in bytes (the first one
// goes in whatever its size): a batch's pipeline carries each event's body
// and payload, encoded into one buffer that grows as it is built, and with
// large events a batch of TxBatch of them would make tens of MB of garbage
// per transaction for no gain: a round trip is nothing next to a MB.
const maxBatchBytes = 1 << 20

// popReady takes the first ready lane and marks it owned. d.mu is held and
// the ready list is not empty.
func (d *dispatcher) popReady() *lane {
	l := d.readyHead
	d.readyHead, l.nextReady = l.nextReady, nil
	if d.readyHead == nil {
		d.readyTail = nil
	}
	l.queued, l.busy = false, true
	return l
}

// finish marks a message as settled (about to be acked, terminated or handed
// back): heartbeats stop for it. A heartbeat sent before finish returns
// reaches the server before the settling reply, since both travel on one
// connection in order.
func (d *dispatcher) finish(it *item) {
	d.mu.Lock()
	it.finished = true
	d.mu.Unlock()
}

// done removes the lane's head, which its worker has settled, and releases
// the lane. When the dispatcher is closing, the rest of the lane is returned
// for the worker to hand back, in order, after its head.
func (d *dispatcher) done(l *lane, it *item) (rest []*item) {
	d.mu.Lock()
	l.head, it.next = it.next, nil
	if l.head == nil {
		l.tail = nil
	}
	d.count--
	d.bytes -= it.size
	l.busy = false
	switch {
	case l.head == nil:
		delete(d.lanes, l.key)
	case d.closing:
		rest = d.takeLane(l)
	default:
		d.pushReady(l)
		d.wake()
	}
	d.mu.Unlock()
	select {
	case d.room <- struct{}{}:
	default:
	}
	return rest
}

// takeLane removes a lane and returns its messages. d.mu is held.
func (d *dispatcher) takeLane(l *lane) []*item {
	var out []*item
	for it := l.head; it != nil; {
		next := it.next
		it.next, it.finished = nil, true
		d.bytes -= it.size
		out = append(out, it)
		it = next
	}
	l.head, l.tail = nil, nil
	d.count -= len(out)
	delete(d.lanes, l.key)
	return out
}

// close stops handing out lanes and returns the messages of every lane no
// worker owns, to be handed back. Owned lanes are returned by done.
func (d *dispatcher) close() []*item {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closing = true
	var out []*item
	for _, l := range d.lanes {
		if !l.busy {
			out = append(out, d.takeLane(l)...)
		}
	}
	for l := d.readyHead; l != nil; {
		next := l.nextReady
		l.nextReady, l.queued = nil, false
		l = next
	}
	d.readyHead, d.readyTail = nil, nil
	d.cond.Broadcast()
	return out
}

// held returns how many messages are held.
func (d *dispatcher) held() int {
	n, _ := d.usage()
	return n
}

// usage returns how many messages are held and their bytes.
func (d *dispatcher) usage() (int, int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.count, d.bytes
}

// progress sends an InProgress heartbeat for every held, unsettled message:
// waiting in a lane, being handled, or waiting for a retry.
func (d *dispatcher) progress() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.lanes {
		for it := l.head; it != nil; it = it.next {
			if !it.finished {
				it.msg.InProgress() //nolint:errcheck // best effort; a missed beat at worst redelivers, and the inbox dedupes
			}
		}
	}
}
