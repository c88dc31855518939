package sink_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// Two producers (two source databases behind one wildcard FILTER_SUBJECT)
// feed one key. Their positions are LSNs of different databases: each is
// compared only with its own producer's, so neither producer's events are
// taken for stale, while each producer's own older events still are.
func TestSink_SkipStaleKeepsProducersApart(t *testing.T) {
	e := newEnv(t)
	h := &effectHandler{}
	obs, _ := e.run(t, h, func(o *sink.Options) { o.SkipStale = true; o.Concurrency = 1 })
	shop := envelope.Builder{Producer: "shop", Subjects: e.builder.Subjects}
	fromShop := func(id string, p envelope.Position) envelope.Message {
		m, err := shop.Build(&envelope.Row{EventID: id, ResourceType: "user", ResourceID: "1", EventType: "user.updated",
			Payload: []byte(`{"n":1}`), Headers: []byte(`{}`), OccurredAt: "2026-01-02 03:04:05.123456+00"}, p)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// billing's database is far ahead of shop's: interleaved, every shop
	// event has a lower LSN than the billing event before it.
	e.publish(t, e.event(t, "billing-1", "user", "1", pos("5/100", 0)))
	e.publish(t, fromShop("shop-1", pos("0/100", 0)))
	e.publish(t, e.event(t, "billing-2", "user", "1", pos("5/200", 0)))
	e.publish(t, fromShop("shop-2", pos("0/200", 0)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 4})
	// An older event of one producer is still stale.
	e.publish(t, fromShop("shop-old", pos("0/150", 0)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultStale: 1})
	e.waitSettled(t)

	if got, want := e.effects(t), []string{"billing-1", "shop-1", "billing-2", "shop-2"}; !slices.Equal(got, want) {
		t.Fatalf("effects=%v, want %v", got, want)
	}
	for _, id := range []string{"billing-1", "shop-1", "billing-2", "shop-2"} {
		if r := e.inbox(t, id); r == nil || r.Status != sink.StatusProcessed {
			t.Fatalf("inbox %s=%+v, want processed", id, r)
		}
	}
	if r := e.inbox(t, "shop-old"); r == nil || r.Status != sink.StatusStale {
		t.Fatalf("inbox shop-old=%+v, want stale", r)
	}
	rows, err := e.pool.Query(context.Background(), `SELECT producer || ' ' || commit_lsn::text || ' ' || event_id
		FROM jetstream_inbox_events_positions WHERE resource_type = 'user' AND resource_id = '1' ORDER BY producer`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if want := []string{"billing 5/200 billing-2", "shop 0/200 shop-2"}; !slices.Equal(got, want) {
		t.Fatalf("positions=%v, want %v", got, want)
	}
	if obs.get(sink.ResultStale) != 1 {
		t.Fatalf("stale=%d, want 1 (shop-old only)", obs.get(sink.ResultStale))
	}
}
