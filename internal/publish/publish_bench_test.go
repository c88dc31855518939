package publish_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// The publish benchmarks run against an embedded JetStream server (file
// storage) in the benchmark process, so allocs/op and the CPU profile include
// the server's share; compare the two benchmarks to see the Publisher's own
// cost over the bare client.
//
//	go test ./internal/publish -run XXX -bench . -benchmem -cpuprofile cpu.out

// benchPublishSetup starts a server, creates a stream like the relay's and
// builds n relay-shaped messages (~550-byte envelope, Nats-Msg-Id, position).
func benchPublishSetup(b *testing.B, n int) (jetstream.JetStream, []envelope.Message) {
	b.Helper()
	srv := testutil.StartNATS(b)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, publish.JetStreamOptions(1024, 10*time.Second)...)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "bench", Subjects: []string{"shop.sync.>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	builder := &envelope.Builder{Producer: "shop", Subjects: envelope.Subjects{App: "shop", Dest: "billing"}}
	payload := []byte(`{"id": 184467, "name": "Ada Lovelace", "plan": "enterprise", "email": "ada.lovelace@example.com", ` +
		`"roles": ["admin", "billing"], "active": true, "address": {"city": "London", "line1": "12 St James's Square", ` +
		`"country": "GB", "postcode": "SW1Y 4JH"}, "balance": 1234.56, "created_at": "2026-11-24T15:08:12.123456+00:00"}`)
	msgs := make([]envelope.Message, n)
	for i := range msgs {
		m, err := builder.Build(&envelope.Row{EventID: fmt.Sprintf("0b7d4c1e-8f7a-4c1b-9d2e-%012x", i), ResourceType: "user",
			ResourceID: "42", EventType: "user.updated", Payload: payload, OccurredAt: "2026-11-24 15:08:12.123456+00"},
			envelope.Position{CommitLSN: 0x16B374D848, TxIndex: i % 10})
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = m
	}
	return js, msgs
}

// BenchmarkPublisher publishes through the relay's Publisher: window 1024,
// acks in submission order. One op is one acknowledged message.
func BenchmarkPublisher(b *testing.B) {
	js, msgs := benchPublishSetup(b, b.N)
	acked := make(chan struct{}, 1)
	n := 0
	p := publish.New(js, publish.Options{MaxInflight: 1024, Log: zerolog.Nop(), Acked: func(*publish.Message, *jetstream.PubAck) {
		if n++; n == b.N {
			acked <- struct{}{}
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	b.SetBytes(int64(len(msgs[0].Body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range msgs {
		m := &msgs[i]
		if err := p.Publish(ctx, &publish.Message{Subject: m.Subject, Body: m.Body, Header: m.Header, MsgID: m.MsgID}); err != nil {
			b.Fatal(err)
		}
	}
	<-acked
}

// BenchmarkPublishAsyncRaw is the bare client with the same window, futures
// checked in order: the limit the Publisher is compared with (cmd/bench
// step 1 measures the same).
func BenchmarkPublishAsyncRaw(b *testing.B) {
	js, msgs := benchPublishSetup(b, b.N)
	futures := make(chan jetstream.PubAckFuture, 1024)
	done := make(chan error, 1)
	go func() {
		for f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.SetBytes(int64(len(msgs[0].Body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range msgs {
		m := &msgs[i]
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header})
		if err != nil {
			b.Fatal(err)
		}
		futures <- f
	}
	close(futures)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublisherFastBatch is BenchmarkPublisher on a stream that takes
// fast batches, with the messages submitted as bursts of 2,000 (a backlog).
func BenchmarkPublisherFastBatch(b *testing.B) {
	js, msgs := benchPublishSetup(b, b.N)
	s, err := js.Stream(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.AllowBatchPublish = true
	if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
		b.Fatal(err)
	}
	acked := make(chan struct{}, 1)
	n := 0
	p := publish.New(js, publish.Options{MaxInflight: 1024, Log: zerolog.Nop(), Batch: func(string) bool { return true },
		Acked: func(*publish.Message, *jetstream.PubAck) {
			if n++; n == b.N {
				acked <- struct{}{}
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	b.SetBytes(int64(len(msgs[0].Body)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range msgs {
		m := &msgs[i]
		ahead := 0
		if i > 0 { // the first is acked alone: batches start once a message was stored
			ahead = min(1999-i%2000, len(msgs)-1-i)
		}
		if err := p.Publish(ctx, &publish.Message{Subject: m.Subject, Body: m.Body, Header: m.Header, MsgID: m.MsgID,
			Ahead: ahead}); err != nil {
			b.Fatal(err)
		}
	}
	<-acked
}
