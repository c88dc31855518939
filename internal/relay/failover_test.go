package relay_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/audit"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// failoverWriter commits outbox rows through the multi-host URL with event
// ids of its own. A commit that fails may have committed anyway (the
// connection died waiting for the answer): such ids are ambiguous and
// checked afterwards.
type failoverWriter struct {
	mu        sync.Mutex
	acked     []string
	ambiguous []string
}

func (fw *failoverWriter) run(ctx context.Context, pool *pgxpool.Pool) {
	for ctx.Err() == nil {
		id := testutil.NewUUID()
		_, err := pool.Exec(ctx, "INSERT INTO "+table+" (event_id, resource_type, resource_id, event_type, payload) VALUES ($1::uuid, 'order', $2, 'created', '{}')", id, id)
		fw.mu.Lock()
		if err == nil {
			fw.acked = append(fw.acked, id)
		} else if ctx.Err() == nil {
			fw.ambiguous = append(fw.ambiguous, id)
		}
		fw.mu.Unlock()
		if err != nil {
			time.Sleep(50 * time.Millisecond) // the primary is gone: do not spin
		} else {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func (fw *failoverWriter) count() int {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return len(fw.acked)
}

// TestFailoverPostgres15: a primary with a synchronous standby; writers,
// the relay and a sink (SQL handler) all connect through one multi-host
// URL (target_session_attrs=read-write). The primary crashes (immediate
// stop) and the standby is promoted; nothing is restarted. The relay finds
// its slot missing on the new primary (Postgres 15 does not carry slots
// over), recovers it and streams on; the sink reconnects by itself. At the
// end: every outbox row on the new primary is in the stream and applied
// once, every commit a writer saw succeed is among them, and both audits
// find no gap, and no event was applied whose transaction the failover
// erased (phantom; the sync fence prevents it). The time from promotion to the first event committed on the
// new primary being published is logged.
func TestFailoverPostgres15(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := testutil.StartPostgres(t)
	if err := primary.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	names := migrations.Names{Outbox: table, Publication: pubName}
	if err := provision.Outbox(ctx, primary.URL("app"), names); err != nil {
		t.Fatal(err)
	}
	if err := provision.Inbox(ctx, primary.URL("app"), names); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, primary.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	if err := provision.Apply(ctx, conn, `CREATE TABLE effects (seq bigserial PRIMARY KEY, event_id text NOT NULL)`,
		`CREATE FUNCTION public.apply_event(e jsonb) RETURNS void LANGUAGE sql AS $$ INSERT INTO effects (event_id) VALUES (e->>'event_id') $$`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	const slot = "relay_failover"
	if _, err := provision.CreateSlot(ctx, primary.URL("app"), slot); err != nil {
		t.Fatal(err)
	}
	standby := testutil.StartStandby(t, primary, testutil.StandbyOptions{Synchronous: true})
	url := testutil.MultiHostURL("app", primary, standby.Postgres)

	nc, err := nats.Connect(testutil.StartNATS(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, publish.JetStreamOptions(256, 5*time.Second)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "jsb", Subjects: []string{"app_a.sync.>"}, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	spec := provision.ConsumerSpec{Stream: "jsb", Durable: "app_b-workers", Filter: subject, AckWait: 30 * time.Second,
		MaxDeliver: 5, Backoff: sink.DefaultBackoff(), MaxAckPending: 1000}
	if _, err := provision.EnsureConsumer(ctx, js, spec, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	cons, err := sink.BindConsumer(ctx, js, "jsb", spec.Durable)
	if err != nil {
		t.Fatal(err)
	}
	newPool := func(max int32) *pgxpool.Pool {
		p, err := localenv.OpenPool(ctx, url, max, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)

	relayPool := newPool(2)
	obs := &counts{}
	r := relay.New(relay.Options{
		DB: relayPool, ConnString: url, NC: nc, JS: js,
		Slot: slot, Publication: pubName, OutboxTable: table,
		Producer: "app_a", Subjects: envelope.Subjects{App: "app_a", Dest: "app_b"}, MaxPayload: 8 << 10,
		Stream: "jsb", StreamSubjects: []string{"app_a.sync.>"}, Manage: true,
		UseDLQ: true, MaxInflight: 256, AckTimeout: 5 * time.Second,
		StatusInterval: 50 * time.Millisecond, ShutdownTimeout: 10 * time.Second, SlotCheck: time.Second, SlotLagWarn: 1 << 30,
		ReplTimeout: 10 * time.Second, RecoverSlot: true,
		Observer: obs, Log: log,
	})
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	var bg sync.WaitGroup
	bg.Add(1)
	relayErr := make(chan error, 1)
	go func() { defer bg.Done(); relayErr <- r.Run(runCtx) }()

	sinkPool := newPool(6)
	handler, err := sink.NewSQLHandler(ctx, sinkPool, "public.apply_event")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(sink.Options{DB: sinkPool, JS: js, Source: sink.JetStreamPull(cons), Handler: handler,
		DLQSubject: "app_b.sync.dlq", UseDLQ: true, Backoff: []time.Duration{100 * time.Millisecond}, FetchWait: 200 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sinkErr := make(chan error, 1)
	bg.Add(1)
	go func() { defer bg.Done(); sinkErr <- s.Run(runCtx) }()

	writeCtx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	writers := []*failoverWriter{{}, {}}
	var wg sync.WaitGroup
	for _, fw := range writers {
		pool := newPool(1)
		wg.Add(1)
		go func() { defer wg.Done(); fw.run(writeCtx, pool) }()
	}
	written := func() int {
		n := 0
		for _, fw := range writers {
			n += fw.count()
		}
		return n
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := written(); n < 100 {
			return fmt.Errorf("writers committed %d rows", n)
		}
		if !r.State().Replicating {
			return errors.New("relay not replicating")
		}
		return nil
	})

	stream, err := js.Stream(ctx, "jsb")
	if err != nil {
		t.Fatal(err)
	}
	onPrimary, err := pgx.Connect(ctx, primary.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	// The phantom window, made certain: the standby stops receiving, so
	// every commit from now on is flushed on the primary, decoded by its
	// walsender, and waits for the standby, which will never have it.
	resume := standby.PauseReceiver()
	phantom := testutil.NewUUID()
	phantomPool := newPool(1)
	phantomCtx, stopPhantom := context.WithTimeout(ctx, 2*time.Minute)
	defer stopPhantom()
	go func() {
		// Fails when the primary dies: its writer never sees it succeed.
		_, _ = phantomPool.Exec(phantomCtx, "INSERT INTO "+table+" (event_id, resource_type, event_type) VALUES ($1::uuid, 'order', 'phantom')", phantom)
	}()
	// Until the relay has decoded it: published (no fence), or every
	// commit that waits for the standby held at the fence.
	testutil.Eventually(t, 30*time.Second, func() error {
		if streamHas(ctx, stream, phantom) {
			return nil
		}
		var waiting int
		var mine bool
		if err := onPrimary.QueryRow(ctx, `SELECT count(*), coalesce(bool_or(query LIKE '%phantom%'), false) FROM pg_stat_activity
			WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO %`+table+`%'`).Scan(&waiting, &mine); err != nil {
			return err
		}
		if held, _ := r.FenceHeld(); mine && held >= waiting {
			return nil
		}
		return fmt.Errorf("the phantom commit is not decoded yet (outbox commits waiting for the standby: %d, phantom among them: %t)", waiting, mine)
	})

	standby.CrashPrimary()
	standby.KillReceiver()
	resume()
	standby.Promote()
	promoted := time.Now()
	// The first event committed on the new primary: when is it published?
	var firstID string
	if err := newPool(1).QueryRow(ctx, "INSERT INTO "+table+" (resource_type, event_type) VALUES ('marker', 'first') RETURNING event_id::text").Scan(&firstID); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if _, err := stream.GetLastMsgForSubject(ctx, subject); err != nil {
			return err
		}
		if !streamHas(ctx, stream, firstID) {
			return errors.New("first event of the new primary not published yet")
		}
		return nil
	})
	firstPublished := time.Since(promoted)
	host := r.State().Host
	before := written()
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := written(); n < before+100 {
			return fmt.Errorf("writers committed %d rows since the promotion, want 100", n-before)
		}
		return nil
	})
	stopWriters()
	wg.Wait()

	// Every row of the new primary in the stream and applied once.
	check := newPool(1)
	var rows int
	if err := check.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	// Lost: a row of the new primary not applied. Phantom: an event applied
	// whose row the new primary does not have: a commit the old primary's
	// walsender decoded before the standby confirmed it, which the failover
	// erased (its writer never saw the commit succeed). The sync fence
	// (auto: the primary has a synchronous standby) publishes nothing the
	// standby does not hold, so there is none.
	var phantoms int
	testutil.Eventually(t, 60*time.Second, func() error {
		var lost, twice int
		if err := check.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM `+table+` o WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.event_id = o.event_id::text)),
			(SELECT count(*) - count(DISTINCT event_id) FROM effects),
			(SELECT count(DISTINCT event_id) FROM effects e WHERE NOT EXISTS (SELECT 1 FROM `+table+` o WHERE o.event_id::text = e.event_id))`).
			Scan(&lost, &twice, &phantoms); err != nil {
			return err
		}
		if twice != 0 {
			t.Fatalf("%d events applied twice", twice)
		}
		if lost != 0 {
			return fmt.Errorf("%d of %d outbox rows not applied", lost, rows)
		}
		return nil
	})
	if phantoms != 0 {
		t.Errorf("%d phantom events: applied, but their transactions are not on the new primary", phantoms)
	}
	if n := obs.fenceDropped.Load(); n == 0 {
		t.Error("no event held at the fence was dropped, although the phantom commit was held there when the primary died")
	}
	for _, fw := range writers {
		for _, id := range fw.acked {
			var ok bool
			if err := check.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+table+" WHERE event_id = $1)", id).Scan(&ok); err != nil {
				t.Fatal(err)
			}
			if !ok {
				t.Errorf("commit %s acknowledged by the old primary is not on the new one", id)
			}
		}
	}
	ambiguous := 0
	for _, fw := range writers {
		ambiguous += len(fw.ambiguous)
	}

	auditConn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer auditConn.Close(ctx)
	quoted, _ := migrations.QuoteQualified(table)
	rep, err := audit.Relay(ctx, auditConn, js, audit.RelayOptions{Stream: "jsb", OutboxTable: quoted, Subjects: envelope.Subjects{App: "app_a", Dest: "app_b"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Gap(); err != nil || rep.Missing != 0 {
		t.Errorf("relay audit: %v (%+v)", err, rep)
	}
	inbox, _ := migrations.QuoteQualified(migrations.DefaultInbox)
	srep, err := audit.Sink(ctx, auditConn, js, audit.SinkOptions{Stream: "jsb", Filter: subject, InboxTable: inbox})
	if err != nil {
		t.Fatal(err)
	}
	if err := srep.Gap(); err != nil {
		t.Errorf("sink audit: %v (%+v)", err, srep)
	}
	if n := obs.recoveries.Load(); n != 1 {
		t.Errorf("slot recoveries=%d, want 1", n)
	}
	t.Logf("failover: %d rows (%d commits failed ambiguously, %d phantom events), relay on %s, promotion to first new-primary event published: %s, rows republished by the recovery: %d",
		rows, ambiguous, phantoms, host, firstPublished.Round(time.Millisecond), obs.recoveredRows.Load())

	stopAll()
	bg.Wait()
	if err := <-relayErr; err != nil {
		t.Errorf("relay: %v", err)
	}
	if err := <-sinkErr; err != nil {
		t.Errorf("sink: %v", err)
	}
}

// streamHas reports whether the stream holds a message with this id on the
// relay's subject (read backwards from the end: it is recent).
func streamHas(ctx context.Context, s jetstream.Stream, id string) bool {
	info, err := s.Info(ctx)
	if err != nil {
		return false
	}
	for seq := info.State.LastSeq; seq > 0 && seq+2000 > info.State.LastSeq; seq-- {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if m.Header.Get(envelope.HeaderMsgID) == id {
			return true
		}
	}
	return false
}
