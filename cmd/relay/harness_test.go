package main_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const (
	appA   = "app_a"
	appB   = "app_b"
	stream = "jetstream-bridge-stream"
)

var slotSeq atomic.Int64

// harness is one relay's world: a database, a NATS server, a slot name.
type harness struct {
	t       *testing.T
	dbURL   string
	pool    *pgxpool.Pool
	natsURL string
	nc      *nats.Conn
	js      jetstream.JetStream
	slot    string
	bin     string
	env     []string
}

func newHarness(t *testing.T, dbURL, natsURL string) *harness {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dbURL: dbURL, pool: pool, natsURL: natsURL, nc: nc, js: js,
		slot: fmt.Sprintf("relay_test_%d_%d", time.Now().UnixNano()%1e6, slotSeq.Add(1)),
		bin:  testutil.BuildBinary(t, "relay")}
	h.env = []string{
		"DATABASE_URL=" + dbURL,
		"NATS_URLS=" + natsURL,
		"APP_NAME=" + appA,
		"DESTINATION_APP=" + appB,
		"REPLICATION_SLOT=" + h.slot,
		"STATUS_INTERVAL=100ms",
		"SLOT_CHECK_INTERVAL=1s",
		"LOG_LEVEL=info",
	}
	return h
}

func (h *harness) start(extra ...string) *testutil.Process {
	h.t.Helper()
	return testutil.StartProcess(h.t, h.bin, append(append([]string{}, h.env...), extra...))
}

// privatePostgres starts a Postgres cluster of the test's own, to stop,
// restart or cut off, with a database "relay", and returns the cluster and
// that database's URL.
func privatePostgres(t *testing.T) (*localenv.Postgres, string) {
	t.Helper()
	pg := testutil.StartPostgres(t)
	if err := pg.CreateDatabase(context.Background(), "relay"); err != nil {
		t.Fatal(err)
	}
	return pg, pg.URL("relay")
}

// throughProxy returns a harness for h's database, NATS server and slot
// whose relay reaches pg, h's cluster, through a TCP proxy the test
// controls.
func (h *harness) throughProxy(pg *localenv.Postgres) (*harness, *testutil.Proxy) {
	h.t.Helper()
	proxy := testutil.StartProxy(h.t, fmt.Sprintf("127.0.0.1:%d", pg.Port()))
	viaProxy := strings.Replace(h.dbURL, fmt.Sprintf("127.0.0.1:%d", pg.Port()), proxy.Addr, 1)
	p := newHarness(h.t, viaProxy, h.natsURL)
	p.slot = h.slot
	p.env = append(p.env, "REPLICATION_SLOT="+p.slot)
	return p, proxy
}

// provision runs `relay provision` so rows inserted afterwards are captured
// even before the relay runs.
func (h *harness) provision() {
	h.t.Helper()
	p := testutil.StartProcess(h.t, h.bin, h.env, "provision")
	if err := p.Wait(60 * time.Second); err != nil {
		h.t.Fatalf("relay provision: %v\n%s", err, p.Output())
	}
}

// waitReplicating waits until the process logs that it streams.
func waitReplicating(t *testing.T, p *testutil.Process) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		if strings.Contains(p.Output(), `"message":"replicating"`) {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("relay exited: %s", p.Output())
		default:
		}
		return fmt.Errorf("relay not replicating yet")
	})
}

// insertTx inserts n rows in one transaction (committed unless rollback) and
// returns their event ids in insertion order.
func (h *harness) insertTx(ctx context.Context, n int, rollback bool) ([]string, error) {
	tx, err := h.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = testutil.NewUUID()
		if _, err := tx.Exec(ctx, `INSERT INTO jetstream_outbox_events (event_id, resource_type, resource_id, event_type, payload)
			VALUES ($1, 'user', $2, 'created', jsonb_build_object('id', $2::text, 'n', $3::int))`, ids[i], fmt.Sprint(i%7), i); err != nil {
			return nil, err
		}
	}
	if rollback {
		return ids, tx.Rollback(ctx)
	}
	return ids, tx.Commit(ctx)
}

// committedIDs is the ground truth: every committed outbox row, in id order.
func (h *harness) committedIDs() []string {
	h.t.Helper()
	rows, err := h.pool.Query(context.Background(), "SELECT event_id::text FROM jetstream_outbox_events ORDER BY id")
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return ids
}

// streamCount is the number of messages stored on subject.
func (h *harness) streamCount(subject string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[subject], nil
}

// waitCount waits until subject holds want messages.
func (h *harness) waitCount(subject string, want int, timeout time.Duration, procs ...*testutil.Process) {
	h.t.Helper()
	testutil.Eventually(h.t, timeout, func() error {
		got, err := h.streamCount(subject)
		if err != nil {
			return err
		}
		if got != uint64(want) {
			out := ""
			if len(procs) > 0 {
				out = testutil.Tail(procs[len(procs)-1].Output(), 5)
			}
			return fmt.Errorf("%s holds %d messages, want %d; relay log tail:\n%s", subject, got, want, out)
		}
		return nil
	})
}

// readStream returns every message on subject in stream order.
func (h *harness) readStream(subject string) []jetstream.Msg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want, err := h.streamCount(subject)
	if err != nil {
		h.t.Fatal(err)
	}
	s, err := h.js.Stream(ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < want {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			h.t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if batch.Error() != nil && ctx.Err() != nil {
			h.t.Fatalf("read stream: %v", batch.Error())
		}
	}
	return out
}

// checkExactlyOnce asserts the stream's messages on subject are exactly the
// committed ids, each once, none of the rolled-back ones, each transaction's
// events in insertion order and transactions in commit order.
func (h *harness) checkExactlyOnce(subject string, committed []string, txs [][]string, rolledBack []string, strictOrder bool) []jetstream.Msg {
	h.t.Helper()
	msgs := h.readStream(subject)
	pos := make(map[string]int, len(msgs))
	var lastLSN string
	lastIdx := -1
	for i, m := range msgs {
		id := m.Headers().Get(envelope.HeaderMsgID)
		if prev, dup := pos[id]; dup {
			h.t.Fatalf("event %s stored twice (stream positions %d and %d)", id, prev, i)
		}
		pos[id] = i
		lsn, idx := m.Headers().Get(envelope.HeaderCommitLSN), m.Headers().Get(envelope.HeaderTxIndex)
		var n int
		fmt.Sscan(idx, &n)
		if strictOrder && lsn == lastLSN && n <= lastIdx {
			h.t.Fatalf("message %d: tx index %d after %d within commit %s", i, n, lastIdx, lsn)
		}
		lastLSN, lastIdx = lsn, n
	}
	want := map[string]bool{}
	for _, id := range committed {
		want[id] = true
		if _, ok := pos[id]; !ok {
			h.t.Fatalf("committed event %s missing from the stream (%d of %d stored)", id, len(msgs), len(committed))
		}
	}
	if got, w := len(msgs), len(committed); got != w {
		h.t.Fatalf("stream holds %d events, want %d committed", got, w)
	}
	for _, id := range rolledBack {
		if _, ok := pos[id]; ok {
			h.t.Fatalf("rolled-back event %s was published", id)
		}
	}
	for _, tx := range txs {
		for i := 1; i < len(tx); i++ {
			if pos[tx[i]] <= pos[tx[i-1]] {
				h.t.Fatalf("transaction order broken: %s at %d before %s at %d", tx[i], pos[tx[i]], tx[i-1], pos[tx[i-1]])
			}
		}
	}
	// Commit order: the outbox id order is insertion order, not commit order,
	// so check commit LSNs never go backwards along the stream.
	var prev uint64
	for i, m := range msgs {
		if !strictOrder {
			break
		}
		var hi, lo uint64
		fmt.Sscanf(m.Headers().Get(envelope.HeaderCommitLSN), "%X/%X", &hi, &lo)
		cur := hi<<32 | lo
		if cur < prev {
			h.t.Fatalf("message %d: commit LSN %s goes backwards", i, m.Headers().Get(envelope.HeaderCommitLSN))
		}
		prev = cur
	}
	return msgs
}

func httpStatus(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// killRounds starts the relay rounds times and kills it (kill -9) once
// another perRound events have reached the stream in that round.
func (h *harness) killRounds(rounds, perRound int) {
	h.t.Helper()
	for round := 0; round < rounds; round++ {
		p := h.start()
		waitReplicating(h.t, p)
		testutil.Eventually(h.t, 30*time.Second, func() error {
			n, _ := h.streamCount(subjAB)
			if n < uint64(perRound*(round+1)) {
				return fmt.Errorf("%d published", n)
			}
			return nil
		})
		p.Kill()
		p.Wait(10 * time.Second)
	}
}
