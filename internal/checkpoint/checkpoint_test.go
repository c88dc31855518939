package checkpoint_test

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/jetstream-bridge/jetstream-bridge/internal/checkpoint"
)

func TestSafeWaitsForEarlierTransactions(t *testing.T) {
	tr := checkpoint.New(100)
	a, b := tr.Begin(), tr.Begin()
	a.Add()
	a.Add()
	a.Commit(200)
	b.Add()
	b.Commit(300)

	b.Done() // later transaction acked first: nothing may move
	if got, want := tr.Safe(), pglogrepl.LSN(100); got != want {
		t.Fatalf("safe=%v, want %v", got, want)
	}
	a.Done()
	if got, want := tr.Safe(), pglogrepl.LSN(100); got != want {
		t.Fatalf("safe=%v after half of a, want %v", got, want)
	}
	a.Done()
	if got, want := tr.Safe(), pglogrepl.LSN(300); got != want {
		t.Fatalf("safe=%v, want %v", got, want)
	}
	if !tr.Idle() {
		t.Fatal("tracker not idle after every event is done")
	}
}

func TestOpenTransactionBlocksUntilCommit(t *testing.T) {
	tr := checkpoint.New(0)
	a := tr.Begin()
	a.Add()
	a.Done() // all events acked but commit not yet read
	if got := tr.Safe(); got != 0 {
		t.Fatalf("safe=%v before commit, want 0", got)
	}
	if tr.Skip(999) {
		t.Fatal("Skip moved the position while a transaction is open")
	}
	a.Commit(50)
	if got := tr.Safe(); got != 50 {
		t.Fatalf("safe=%v, want 50", got)
	}
}

func TestEmptyTransactionAdvances(t *testing.T) {
	tr := checkpoint.New(0)
	tr.Begin().Commit(10)
	if got := tr.Safe(); got != 10 {
		t.Fatalf("safe=%v, want 10", got)
	}
}

func TestAbandonNeverAdvancesAndNeverGoesBack(t *testing.T) {
	tr := checkpoint.New(0)
	a := tr.Begin()
	a.Add()
	a.Commit(100)
	a.Done()
	partial := tr.Begin()
	partial.Add()
	partial.Abandon()
	again := tr.Begin() // the same transaction re-sent after a reconnect
	again.Add()
	again.Commit(80)
	again.Done()
	if got := tr.Safe(); got != 100 {
		t.Fatalf("safe=%v while abandoned event in flight, want 100", got)
	}
	partial.Done()
	if got := tr.Safe(); got != 100 {
		t.Fatalf("safe=%v, want 100 (never backwards)", got)
	}
}

func TestSkipWhenIdle(t *testing.T) {
	tr := checkpoint.New(5)
	if !tr.Skip(40) || tr.Safe() != 40 {
		t.Fatalf("Skip on idle tracker: safe=%v, want 40", tr.Safe())
	}
	if !tr.Skip(30) || tr.Safe() != 40 {
		t.Fatalf("Skip moved backwards: safe=%v", tr.Safe())
	}
}

// TestConcurrentAcksNeverPassUnacked acks events from many goroutines in random
// order and checks, at every step, that the safe LSN never passes a transaction
// with an unacked event.
func TestConcurrentAcksNeverPassUnacked(t *testing.T) {
	const txs, perTx = 2000, 3
	tr := checkpoint.New(0)
	type ev struct {
		tx  *checkpoint.Tx
		end pglogrepl.LSN
	}
	var evs []ev
	for i := 1; i <= txs; i++ {
		tx := tr.Begin()
		for j := 0; j < perTx; j++ {
			tx.Add()
			evs = append(evs, ev{tx, pglogrepl.LSN(i * 10)})
		}
		tx.Commit(pglogrepl.LSN(i * 10))
	}
	rand.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })

	var mu sync.Mutex
	acked := map[pglogrepl.LSN]int{}
	minUnacked := func() pglogrepl.LSN { // lowest end LSN with an unacked event
		for i := 1; i <= txs; i++ {
			if acked[pglogrepl.LSN(i*10)] < perTx {
				return pglogrepl.LSN(i * 10)
			}
		}
		return pglogrepl.LSN(1 << 62)
	}
	var wg sync.WaitGroup
	ch := make(chan ev)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range ch {
				mu.Lock()
				acked[e.end]++
				e.tx.Done()
				if safe, lim := tr.Safe(), minUnacked(); safe >= lim {
					mu.Unlock()
					t.Errorf("safe=%v passes unacked transaction %v", safe, lim)
					return
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range evs {
		ch <- e
	}
	close(ch)
	wg.Wait()
	if got, want := tr.Safe(), pglogrepl.LSN(txs*10); got != want {
		t.Fatalf("final safe=%v, want %v", got, want)
	}
}

func BenchmarkAddDone(b *testing.B) {
	tr := checkpoint.New(0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tx := tr.Begin()
		tx.Add()
		tx.Commit(pglogrepl.LSN(i + 1))
		tx.Done()
	}
}

// TestRebase: a recreated slot restarts the safe position at its own start,
// lower than positions reached on the old slot, but only with nothing in
// flight: an event handed over keeps its transaction's place.
func TestRebase(t *testing.T) {
	tr := checkpoint.New(0)
	tx := tr.Begin()
	tx.Add()
	tx.Commit(500)
	if tr.Rebase(100) {
		t.Fatal("rebased with an event in flight")
	}
	tx.Done()
	if got := tr.Safe(); got != 500 {
		t.Fatalf("safe=%v, want 500", got)
	}
	if !tr.Rebase(100) {
		t.Fatal("idle tracker refused to rebase")
	}
	if got := tr.Safe(); got != 100 {
		t.Fatalf("safe after rebase=%v, want 100 (the new slot's start)", got)
	}
	tx = tr.Begin()
	tx.Add()
	tx.Commit(200)
	tx.Done()
	if got := tr.Safe(); got != 200 {
		t.Fatalf("safe=%v, want 200", got)
	}
}
