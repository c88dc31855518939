package sink_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// BenchmarkSink_EndToEnd measures applied events per second through the
// whole path (fetch, inbox transaction with a SQL procedure, commit, ack)
// against the local Postgres and embedded JetStream, keys spread over 100.
func BenchmarkSink_EndToEnd(b *testing.B) {
	e := newEnv(b)
	e.exec(b, `CREATE PROCEDURE public.apply(e jsonb) LANGUAGE sql AS $$ INSERT INTO effects (event_id) VALUES (e->>'event_id') $$`)
	h, err := sink.NewSQLHandler(context.Background(), e.pool, "public.apply")
	if err != nil {
		b.Fatal(err)
	}
	var futures []jetstream.PubAckFuture
	for i := range b.N {
		m, err := e.builder.Build(&envelope.Row{EventID: "b" + strconv.Itoa(i), ResourceType: "user", ResourceID: strconv.Itoa(i % 100),
			EventType: "user.updated", Payload: []byte(`{"n":1}`), OccurredAt: "2026-01-02 03:04:05+00"},
			envelope.Position{CommitLSN: 0x10, TxIndex: i})
		if err != nil {
			b.Fatal(err)
		}
		f, err := e.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	obs, stop := e.run(b, h, func(o *sink.Options) { o.Concurrency = 8; o.BatchSize = 100 })
	testutil.Eventually(b, 5*time.Minute, func() error {
		if got := obs.get(sink.ResultApplied); got < b.N {
			return fmt.Errorf("%d of %d applied", got, b.N)
		}
		return nil
	})
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
