package audit_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// BenchmarkRelayAudit audits 100000 outbox rows against as many stored
// messages and reports the time per event and the heap in use after the
// audit (which includes the embedded server holding the stream).
//
//	go test -run '^$' -bench RelayAudit -benchtime 1x ./internal/audit/
func BenchmarkRelayAudit(b *testing.B) {
	const n = 100000
	ctx := context.Background()
	dsn := testutil.NewDatabase(b)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	sql, err := migrations.Outbox(migrations.Names{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO jetstream_outbox_events (event_id, resource_type, event_type, occurred_at)
		SELECT gen_random_uuid(), 'user', 'created', now() - interval '1 minute' FROM generate_series(1, $1)`, n); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(testutil.StartNATS(b).URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "s", Subjects: []string{"a.sync.>"}}); err != nil {
		b.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT event_id::text FROM jetstream_outbox_events ORDER BY id")
	if err != nil {
		b.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"event_id":"x","payload":{}}`)
	for i, id := range ids {
		m := nats.NewMsg("a.sync.b")
		m.Data = body
		m.Header.Set(envelope.HeaderMsgID, id)
		m.Header.Set(envelope.HeaderCommitLSN, fmt.Sprintf("0/%X", 0x1000000+i))
		m.Header.Set(envelope.HeaderTxIndex, "0")
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
		if i%2000 == 1999 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("publish did not complete")
	}
	ids = nil
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		rep, err := audit.Relay(ctx, conn, js, audit.RelayOptions{
			Window: audit.Window{Since: time.Now().Add(-time.Hour), Page: audit.DefaultPage, Limit: 10},
			Stream: "s", OutboxTable: `"public"."jetstream_outbox_events"`, Subjects: envelope.Subjects{App: "a", Dest: "b"}})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Rows != n || rep.Published != n || rep.Missing != 0 || rep.OutOfOrder != 0 || rep.StoredTwice != 0 {
			b.Fatalf("report: %+v", rep)
		}
		elapsed := time.Since(start)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/event")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
		b.Logf("%d events audited in %s, heap in use after: %.1f MiB", n, elapsed, float64(ms.HeapInuse)/(1<<20))
	}
}
