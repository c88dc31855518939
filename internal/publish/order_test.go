package publish_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// acrossKeys spreads the messages over 20 subjects (keys), as a relay's
// events of many resources are.
func acrossKeys(m *publish.Message) {
	n, _ := strconv.Atoi(m.MsgID)
	m.Subject = fmt.Sprintf("s.k%d", n%20)
}

// checkStoredOnceInOrder fails unless the stream holds exactly ids, each
// once, in this order.
func checkStoredOnceInOrder(t *testing.T, r *batchRig, ids []string) {
	t.Helper()
	stored := r.streamIDs(t)
	seen := map[string]int{}
	for _, id := range stored {
		seen[id]++
	}
	twice := 0
	for _, n := range seen {
		if n > 1 {
			twice++
		}
	}
	if len(seen) != len(ids) || twice > 0 {
		t.Fatalf("the stream holds %d distinct of %d messages, %d of them more than once", len(seen), len(ids), twice)
	}
	out := 0
	for i := range ids {
		if stored[i] != ids[i] {
			out++
		}
	}
	if out > 0 {
		t.Fatalf("%d of %d stream positions hold another message than submitted there", out, len(ids))
	}
}

// TestPushBackKeepsStreamOrderInFastBatches: the stream's ingest queue
// takes 20 messages, far less than the window, so the server refuses
// publishes ("429 too many requests") all along while accepting the ones
// right behind. Fast batches in "gap: fail" mode make the server store
// nothing of a batch after a refused message, and the publisher republishes
// from there: the stream order is the submission order, every message is
// stored once, and the acks come in submission order.
func TestPushBackKeepsStreamOrderInFastBatches(t *testing.T) {
	srv := testutil.StartNATSConfig(t, "jetstream { max_buffered_msgs: 20 }")
	var refused atomic.Int64
	r := newBatchRig(t, testutil.ConnectJS(t, srv.URL()), jetstream.StreamConfig{AllowBatchPublish: true, Duplicates: time.Minute}, false,
		publish.Options{MaxInflight: 256, AckTimeout: 5 * time.Second,
			Retried: func(_ *publish.Message, err error) {
				if strings.Contains(err.Error(), "too many requests") {
					refused.Add(1)
				}
			}})
	ids := seqIDs(0, 5000)
	r.publishAll(t, ids[:1], 1, acrossKeys) // batches start once a message was stored
	r.waitAcked(t, 1)
	r.publishAll(t, ids[1:], 1000, acrossKeys)
	r.waitAcked(t, len(ids))
	if refused.Load() == 0 {
		t.Fatal("the server refused no publish: the test did not push back")
	}
	t.Logf("%d publishes refused by the server, %d messages sent in fast batches", refused.Load(), r.p.Batched())
	checkOrder(t, "acks", r.rec.acked, ids)
	checkStoredOnceInOrder(t, r, ids)
}

// TestPushBackPerMessageWindowStaysUnderIngestLimit: without fast batches a
// refused publish cannot be kept from being overtaken by the ones behind it,
// so the window bounds its bytes below the server's ingest queue (here
// lowered to 64 kB, with 1 kB messages and a window of 1,024): the server
// never refuses one, and the stream order is the submission order.
func TestPushBackPerMessageWindowStaysUnderIngestLimit(t *testing.T) {
	srv := testutil.StartNATSConfig(t, "jetstream { max_buffered_size: 64KB }")
	var retried atomic.Int64
	r := newBatchRig(t, testutil.ConnectJS(t, srv.URL()), jetstream.StreamConfig{Duplicates: time.Minute}, false,
		publish.Options{MaxInflight: 1024, MaxInflightBytes: 32 << 10, AckTimeout: 5 * time.Second,
			Retried: func(*publish.Message, error) { retried.Add(1) }})
	body := bytes.Repeat([]byte("x"), 1000)
	ids := seqIDs(0, 4000)
	r.publishAll(t, ids, 1, func(m *publish.Message) {
		acrossKeys(m)
		m.Body = body
	})
	r.waitAcked(t, len(ids))
	if n := retried.Load(); n > 0 {
		t.Errorf("%d publishes were retried: the window went past the server's ingest limit", n)
	}
	checkOrder(t, "acks", r.rec.acked, ids)
	checkStoredOnceInOrder(t, r, ids)
}

// TestFastBatchConfirmsOnlyStoredMessages: in a fast batch the stream
// refuses one message (over its maximum size), and the reports of that
// refusal never reach the publisher (a proxy drops error and gap reports on
// fast batch reply subjects; the server documents that such reports give no
// guarantee). The acks still never cover the refused message: only what
// the server positively confirmed as stored is acked, the refused message
// is dead-lettered, and the stream holds every other message once, in order.
func TestFastBatchConfirmsOnlyStoredMessages(t *testing.T) {
	srv := testutil.StartNATS(t)
	proxy := testutil.StartFilterProxy(t, strings.TrimPrefix(srv.URL(), "nats://"), func(subject string, data []byte) bool {
		return strings.HasSuffix(subject, ".$FI") &&
			(bytes.Contains(data, []byte(`"error"`)) || bytes.Contains(data, []byte(`"type":"gap"`)))
	})
	r := newBatchRig(t, testutil.ConnectJS(t, "nats://"+proxy.Addr), jetstream.StreamConfig{AllowBatchPublish: true, MaxMsgSize: 512}, false,
		publish.Options{MaxInflight: 256, AckTimeout: 5 * time.Second,
			Rejected: func(m *publish.Message, err error) (*publish.Message, error) {
				return &publish.Message{Subject: "s.dlq", Body: []byte(`{}`),
					Header: nats.Header{"Nats-Msg-Id": []string{"dlq-" + m.MsgID}, "Bridge-Error": []string{err.Error()}}}, nil
			}})
	r.publishAll(t, seqIDs(0, 10), 10, nil) // batches start once a message was stored
	r.waitAcked(t, 10)
	ids := seqIDs(10, 400)
	r.publishAll(t, ids, len(ids), func(m *publish.Message) {
		if m.MsgID == "200" {
			m.Body = make([]byte, 2048)
		}
	})
	r.waitAcked(t, 400)
	if proxy.Dropped() == 0 {
		t.Fatal("no report was dropped: the refusal did not happen inside a fast batch")
	}
	if r.p.Batched() < 150 {
		t.Fatalf("only %d messages went in fast batches", r.p.Batched())
	}
	stored := map[string]bool{}
	for _, id := range r.streamIDs(t) {
		stored[id] = true
	}
	dead := map[string]bool{}
	for _, id := range r.rec.dead {
		dead[id] = true
	}
	for _, id := range r.rec.acked {
		if !dead[id] && !stored[id] {
			t.Fatalf("message %s was acked as stored, but the stream does not hold it", id)
		}
	}
	if fmt.Sprint(r.rec.dead) != "[200]" {
		t.Fatalf("dead letters %v, want exactly 200", r.rec.dead)
	}
	checkOrder(t, "acks", r.rec.acked, seqIDs(0, 400))
	var got []string
	for _, id := range r.streamIDs(t) {
		if id != "dlq-200" {
			got = append(got, id)
		}
	}
	checkOrder(t, "stream", got, append(seqIDs(0, 200), seqIDs(201, 400)...))
}
