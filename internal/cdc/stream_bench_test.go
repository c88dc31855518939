package cdc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"
	"github.com/jetstream-bridge/jetstream-bridge/internal/checkpoint"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// BenchmarkStream reads committed outbox inserts from a real replication
// slot: the relay's reader alone (socket, pgoutput decode, checkpoint
// bookkeeping), with every event acknowledged at once. One op is one event;
// allocs/op is what the reader allocates per event. The rows are written
// before the timer starts, in transactions of tx rows.
//
//	go test ./internal/cdc -run XXX -bench Stream -benchmem -cpuprofile cpu.out
func BenchmarkStream(b *testing.B) {
	for _, tx := range []int{1, 10} {
		b.Run(fmt.Sprintf("tx=%d", tx), func(b *testing.B) { benchStream(b, tx, false) })
	}
}

// BenchmarkStreamMessages is BenchmarkStream with the events written as
// logical decoding messages (jetstream_publish in message mode).
func BenchmarkStreamMessages(b *testing.B) {
	for _, tx := range []int{1, 10} {
		b.Run(fmt.Sprintf("tx=%d", tx), func(b *testing.B) { benchStream(b, tx, true) })
	}
}

func benchStream(b *testing.B, rowsPerTx int, messages bool) {
	ctx := context.Background()
	url := testutil.NewDatabase(b)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	outbox, err := migrations.Outbox(migrations.Names{})
	if err != nil {
		b.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	if err := provision.Apply(ctx, conn, outbox); err != nil {
		b.Fatal(err)
	}
	conn.Close(ctx)
	slot := fmt.Sprintf("bench_stream_%d", time.Now().UnixNano())
	if _, err := provision.CreateSlot(ctx, url, slot); err != nil {
		b.Fatal(err)
	}

	// Rows as the bench's writers insert them (cmd/bench): ~300-byte payload.
	const payload = `{"id": 184467, "name": "Ada Lovelace", "plan": "enterprise", "email": "ada.lovelace@example.com", ` +
		`"roles": ["admin", "billing"], "active": true, "address": {"city": "London", "line1": "12 St James's Square", ` +
		`"country": "GB", "postcode": "SW1Y 4JH"}, "balance": 1234.56, "created_at": "2026-11-24T15:08:12.123456+00:00"}`
	insert := `INSERT INTO jetstream_outbox_events (resource_type, resource_id, event_type, payload)
				SELECT 'user', g::text, 'user.updated', $1::jsonb FROM generate_series(1, $2) g`
	if messages {
		insert = `SELECT set_config('jetstream_bridge.outbox_mode', 'message', true),
				jetstream_publish('user', 'user.updated', $1::jsonb, g::text) FROM generate_series(1, $2) g`
	}
	for done := 0; done < b.N; {
		var batch pgx.Batch
		for i := 0; i < 50 && done < b.N; i++ {
			n := min(rowsPerTx, b.N-done)
			batch.Queue("BEGIN")
			batch.Queue(insert, payload, n)
			batch.Queue("COMMIT")
			done += n
		}
		// A batch is one implicit transaction; BEGIN and COMMIT inside it
		// make every insert statement a transaction of its own.
		if err := pool.SendBatch(ctx, &batch).Close(); err != nil {
			b.Fatal(err)
		}
	}

	tracker := checkpoint.New(0)
	stream := cdc.NewStream(cdc.Options{ConnString: url, Slot: slot, Publication: migrations.DefaultPublication,
		Table: "public.jetstream_outbox_events", StatusInterval: time.Second, Log: zerolog.Nop()}, tracker)
	runCtx, cancel := context.WithCancel(ctx)
	events := make(chan *cdc.Event, 1024)
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { done <- stream.Run(runCtx, events) }()
	for range b.N {
		ev, ok := <-events
		if !ok {
			b.Fatalf("stream ended: %v", <-done)
		}
		ev.Done()
	}
	b.StopTimer()
	cancel()
	for range events {
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
