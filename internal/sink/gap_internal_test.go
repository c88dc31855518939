package sink

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// delivered is a message as a consumer delivers it, with the sequences the
// gap rule reads; its replies do nothing.
type delivered struct {
	storedMsg
	cons uint64
}

func (d *delivered) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Consumer: d.cons, Stream: d.seq}, NumDelivered: 1, Stream: d.stream}, nil
}

// TestGapFill_RulesAgainstARealStream: a jump in the delivery sequence reads
// the messages in between from the stream, at most as many as deliveries
// were lost; no jump reads nothing; after a failed pull the next new
// message is checked against the stream even without a jump (a restarted
// server may number its deliveries again), and a redelivery does not use
// the check up.
func TestGapFill_RulesAgainstARealStream(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := nats.Connect(testutil.StartNATS(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "gaps", Subjects: []string{"p.>"}}); err != nil {
		t.Fatal(err)
	}
	// Stream: 1 p.0, 2 p.1, 3 p.0, 4 p.0, 5 p.1, 6 p.0, 7 p.0, 8 p.0
	for _, subj := range []string{"p.0", "p.1", "p.0", "p.0", "p.1", "p.0", "p.0", "p.0"} {
		if _, err := js.Publish(ctx, subj, []byte(subj)); err != nil {
			t.Fatal(err)
		}
	}
	s := &Sink{js: js, fillGaps: true, maxHeld: 10, obs: nopObserver{}, log: zerolog.Nop()}
	g := s.newGapFill("gaps", []string{"p.0"})
	g.start(&jetstream.ConsumerInfo{})
	msg := func(cons, seq uint64) Msg {
		return &delivered{storedMsg: storedMsg{stream: "gaps", seq: seq, raw: &jetstream.RawStreamMsg{Sequence: seq}}, cons: cons}
	}
	seqs := func(ms []Msg) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.(*storedMsg).seq)
		}
		return out
	}
	check := func(name string, got []Msg, want ...uint64) {
		t.Helper()
		if g, w := seqs(got), want; len(g) != len(w) || (len(g) > 0 && g[0] != w[0]) || (len(g) > 1 && g[1] != w[1]) {
			t.Fatalf("%s: read %v from the stream, want %v", name, g, w)
		}
	}
	check("first delivery, in order", g.before(ctx, msg(1, 1)))
	// Deliveries 2 (stream 3) and 3 (stream 4) lost: delivery 4 is stream 6.
	check("two deliveries lost", g.before(ctx, msg(4, 6)), 3, 4)
	// A redelivery of a message seen before reads nothing.
	check("redelivery", g.before(ctx, msg(5, 3)))
	// Delivery 6 (stream 7) lost, but the failed pull's next delivery comes
	// numbered 6 (stream 8): only the suspicion finds stream 7.
	check("no jump, no suspicion", g.before(ctx, msg(6, 8)))
	g2 := s.newGapFill("gaps", []string{"p.0"})
	g2.start(&jetstream.ConsumerInfo{AckFloor: jetstream.SequenceInfo{Consumer: 2, Stream: 3}})
	g2.suspect()
	check("a redelivery keeps the suspicion", g2.before(ctx, msg(3, 1)))
	check("suspected, no jump", g2.before(ctx, msg(4, 7)), 4, 6)
	check("suspicion used up", g2.before(ctx, msg(5, 8)))
}
