package chaos_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/jackc/pglogrepl"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/localenv"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// ---- hostile names ----

// TestHostileNamesRefusedBeforeConnecting: configured SQL names (HANDLER,
// INBOX_TABLE, OUTBOX_TABLE, REPLICATION_SLOT, PUBLICATION, a route's
// handler) are refused, never quoted: each binary, pointed at a real
// database and a real NATS server, exits non-zero naming the variable before
// it starts anything (`run` and `provision`; handlers only matter to `sink
// run`), and the database and JetStream are untouched.
func TestHostileNamesRefusedBeforeConnecting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dbURL := testutil.NewDatabase(t)
	natsURL := testutil.StartNATS(t).URL()
	pool := mustPool(t, ctx, dbURL, 2)
	if _, err := pool.Exec(ctx, `CREATE TABLE canary (id int); CREATE TABLE y (id int); INSERT INTO canary VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	relayBin, sinkBin := testutil.BuildBinary(t, "relay"), testutil.BuildBinary(t, "sink")
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(routes, []byte("- event_type: created\n  handler: \"sql:public.x; drop table y\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	hostileSQL := []string{ // qualified names
		"public.t; drop table y", `"public"."t"`, `public."t"`, "public.t--", "public.t'--", "public.t/*", "public.t drop",
		"public.t;", "public..t", "public.t.u", "public.t$$", "Public.T", "public.t\ndrop table y",
		"publіc.t",                       // Cyrillic і
		"public.ｔ",                       // fullwidth t
		"public.t\u200b",                 // zero-width space
		"public.t\u202edrop",             // right-to-left override
		"public.jetstream_outbox_evеnts", // Cyrillic е
		" public.t", "public.t ",
	}
	hostileIdent := []string{ // slot and publication names
		"s; drop table y", "s'--", `"s"`, "s--", "s name", "S", "s;", "s/*", "s\ndrop table y",
		"slоt",       // Cyrillic о
		"ｓlot",       // fullwidth s
		"slot\u200b", // zero-width space
		"1slot",
	}
	type tc struct {
		bin, variable, value string
	}
	var cases []tc
	for _, v := range hostileSQL {
		cases = append(cases, tc{"relay", "OUTBOX_TABLE", v}, tc{"sink", "INBOX_TABLE", v}, tc{"sink", "HANDLER", "sql:" + v})
	}
	for _, v := range []string{`sql:"a"."b"`, "sql:public.x--", "sql:public.x()", "sql:public.x(1)", "sql:public.x;select 1",
		"sql:public", "sql:", "sql:pg_catalog.pg_sleep(10)", "SQL:public.x", "sql :public.x"} {
		cases = append(cases, tc{"sink", "HANDLER", v})
	}
	for _, v := range hostileIdent {
		cases = append(cases, tc{"relay", "REPLICATION_SLOT", v}, tc{"relay", "PUBLICATION", v})
	}
	cases = append(cases, tc{"sink", "ROUTES_FILE", routes})

	relayEnv := []string{"DATABASE_URL=" + dbURL, "NATS_URLS=" + natsURL, "APP_NAME=app_a", "DESTINATION_APP=app_b",
		"REPLICATION_SLOT=hostile_test", "OUTBOX_TABLE=", "PUBLICATION=", "LOG_LEVEL=debug", "HTTP_ADDR="}
	sinkEnv := []string{"DATABASE_URL=" + dbURL, "NATS_URLS=" + natsURL, "APP_NAME=app_b", "DESTINATION_APP=app_a",
		"HANDLER=sql:public.apply_event", "ROUTES_FILE=", "INBOX_TABLE=", "LOG_LEVEL=debug", "HTTP_ADDR="}
	for _, c := range cases {
		bin, env := relayBin, relayEnv
		if c.bin == "sink" {
			bin, env = sinkBin, sinkEnv
		}
		env = append(append([]string{}, env...), c.variable+"="+c.value)
		if c.variable == "ROUTES_FILE" {
			env = append(env, "HANDLER=")
		}
		argSets := [][]string{nil, {"provision"}}
		if c.variable == "HANDLER" || c.variable == "ROUTES_FILE" {
			// Only `sink run` calls a handler; provision, status and dlq
			// ignore HANDLER and ROUTES_FILE, so the value never reaches SQL.
			argSets = argSets[:1]
		}
		for _, args := range argSets {
			p := testutil.StartProcess(t, bin, env, args...)
			err := p.Wait(30 * time.Second)
			out := p.Output()
			switch {
			case err == nil || errors.Is(err, testutil.ErrStillRunning):
				p.Kill()
				t.Errorf("%s %v with %s=%q: %v, want a non-zero exit\n%s", c.bin, args, c.variable, c.value, err, testutil.Tail(out, 5))
			case !strings.Contains(out, c.variable):
				t.Errorf("%s %v with %s=%q: the error does not name the variable:\n%s", c.bin, args, c.variable, c.value, testutil.Tail(out, 5))
			case strings.Contains(out, `"message":"starting`):
				t.Errorf("%s %v with %s=%q: started before refusing the name:\n%s", c.bin, args, c.variable, c.value, testutil.Tail(out, 5))
			}
		}
	}
	t.Logf("%d hostile values refused (names by `run` and `provision`, handlers by `run`)", len(cases))

	var tables []string
	rows, err := pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(tables, ","), "canary,y"; got != want {
		t.Errorf("tables after the hostile runs: %s, want %s (nothing created, nothing dropped)", got, want)
	}
	var canary, pubs, slots int
	pool.QueryRow(ctx, `SELECT count(*) FROM canary`).Scan(&canary)
	pool.QueryRow(ctx, `SELECT count(*) FROM pg_publication`).Scan(&pubs)
	pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&slots)
	if canary != 1 || pubs != 0 || slots != 0 {
		t.Errorf("canary rows=%d, publications=%d, slots=%d; want 1, 0, 0", canary, pubs, slots)
	}
	_, js := connectNATS(t, natsURL)
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		t.Errorf("stream %s exists: a hostile run reached JetStream", n)
	}
}

// ---- Standard Webhooks ----

// webhookTolerance is how old (or how far in the future) a signed
// timestamp may be: the Standard Webhooks recommendation, 5 minutes.
const webhookTolerance = 5 * time.Minute

var (
	errUnsigned  = errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	errTimestamp = errors.New("timestamp outside the tolerance (replay?)")
	errSignature = errors.New("no valid signature")
)

// verifyWebhook checks a Standard Webhooks request by hand (independently of
// internal/sink): the signed content is id.timestamp.body, HMAC-SHA256 with
// the secret's key, base64, "v1," prefixed, one of a space-separated list;
// and the timestamp must be within the tolerance of now, so a captured
// request cannot be replayed later (its timestamp is signed).
func verifyWebhook(key []byte, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errUnsigned
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errTimestamp
	}
	if d := now.Sub(time.Unix(sec, 0)); d > webhookTolerance || d < -webhookTolerance {
		return errTimestamp
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, sig, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errSignature
}

// webhookKey decodes a "whsec_<base64>" secret by hand.
func webhookKey(t *testing.T, secret string) []byte {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// receiver is a webhook endpoint that verifies every request, applies each
// webhook-id once (a repeat is answered 200 without a second effect: the
// sink re-sends the same id after a crash), and answers 503 to the first
// attempt of the event ids in failFirst.
type receiver struct {
	key []byte

	mu        sync.Mutex
	now       func() time.Time
	applied   map[string]int // event id → effects
	failFirst map[string]bool
	rejected  []string
	dups      int
	last      struct {
		header http.Header
		body   []byte
	}
}

func newReceiver(t *testing.T, key []byte) (*receiver, *httptest.Server) {
	rc := &receiver{key: key, now: time.Now, applied: map[string]int{}, failFirst: map[string]bool{}}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := verifyWebhook(rc.key, r.Header, body, rc.now()); err != nil {
		rc.rejected = append(rc.rejected, err.Error())
		status := http.StatusUnauthorized
		if errors.Is(err, errTimestamp) {
			status = http.StatusBadRequest
		}
		http.Error(w, err.Error(), status)
		return
	}
	id := r.Header.Get("webhook-id")
	if rc.failFirst[id] {
		delete(rc.failFirst, id)
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	rc.last.header, rc.last.body = r.Header.Clone(), body
	if rc.applied[id] > 0 {
		rc.dups++
		w.WriteHeader(http.StatusOK)
		return
	}
	rc.applied[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) count() (applied, rejected int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.applied), len(rc.rejected)
}

// TestStandardWebhooksTestVector: the sink's Sign reproduces the Standard
// Webhooks reference vector, and the hand-written verifier used below
// accepts it (and refuses it once the tolerance has passed).
func TestStandardWebhooksTestVector(t *testing.T) {
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = "1614265330"
		body   = `{"test": 2432232314}`
		want   = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	key, err := sink.DecodeWebhookSecret(secret)
	if err != nil || !bytes.Equal(key, webhookKey(t, secret)) {
		t.Fatalf("DecodeWebhookSecret: %x %v, want %x", key, err, webhookKey(t, secret))
	}
	if got := sink.Sign(key, id, ts, []byte(body)); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {"v1,bm9wZQ== " + want}}
	at := time.Unix(1614265330, 0)
	if err := verifyWebhook(key, h, []byte(body), at.Add(time.Minute)); err != nil {
		t.Fatalf("verifier refuses the reference vector: %v", err)
	}
	if err := verifyWebhook(key, h, []byte(body), at.Add(webhookTolerance+time.Second)); !errors.Is(err, errTimestamp) {
		t.Fatalf("verifier accepted the vector %s after it was signed: %v", webhookTolerance+time.Second, err)
	}
}

// TestWebhookSignaturesAndReplay runs the sink binary with a webhook handler
// and WEBHOOK_SECRET against a receiver that verifies Standard Webhooks
// signatures by hand: every request verifies; a captured request replayed
// at once is recognised by its webhook-id and not applied twice; replayed
// after the tolerance it is rejected; its timestamp refreshed by an attacker,
// or its body changed, the signature no longer verifies.
func TestWebhookSignaturesAndReplay(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	secret := newWebhookSecret()
	key := webhookKey(t, secret)
	rc, srv := newReceiver(t, key)
	natsURL := testutil.StartNATS(t).URL()
	_, js := connectNATS(t, natsURL)
	p := testutil.StartProcess(t, testutil.BuildBinary(t, "sink"), []string{
		"DATABASE_URL=" + testutil.NewDatabase(t), "NATS_URLS=" + natsURL, "APP_NAME=app_b", "DESTINATION_APP=app_a",
		"HANDLER=" + srv.URL + "/hook", "WEBHOOK_SECRET=" + secret, "ROUTES_FILE=", "ACK_WAIT=2s", "BACKOFF=200ms",
		"LOG_LEVEL=info", "HTTP_ADDR=",
	})
	testutil.Eventually(t, 60*time.Second, func() error {
		if !strings.Contains(p.Output(), `"message":"consuming"`) {
			return fmt.Errorf("sink not consuming:\n%s", testutil.Tail(p.Output(), 5))
		}
		return nil
	})
	b := envelope.Builder{Producer: "app_a", Subjects: envelope.Subjects{App: "app_a", Dest: "app_b"}}
	const events = 20
	for i := range events {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		if i%5 == 0 {
			rc.mu.Lock()
			rc.failFirst[id] = true // the retry is signed afresh
			rc.mu.Unlock()
		}
		m, err := b.Build(&envelope.Row{EventID: id, ResourceType: "user", ResourceID: strconv.Itoa(i % 3), EventType: "updated",
			Payload: []byte(`{"n":` + strconv.Itoa(i) + `}`), OccurredAt: "2026-01-02 03:04:05+00"}, envelope.Position{CommitLSN: pglogrepl.LSN(0x16 + i), TxIndex: 0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: m.Header}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n, _ := rc.count(); n < events {
			return fmt.Errorf("%d of %d applied", n, events)
		}
		return nil
	})
	rc.mu.Lock()
	if len(rc.rejected) != 0 || len(rc.failFirst) != 0 {
		t.Fatalf("rejected %v; failed-first left %d: every sink request must verify", rc.rejected, len(rc.failFirst))
	}
	last := rc.last
	rc.mu.Unlock()

	replay := func(h http.Header, body []byte) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", bytes.NewReader(body))
		req.Header = h.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := replay(last.header, last.body); got != http.StatusOK {
		t.Errorf("immediate replay: status %d, want 200 without a second effect", got)
	}
	rc.mu.Lock()
	rc.now = func() time.Time { return time.Now().Add(webhookTolerance + time.Minute) }
	rc.mu.Unlock()
	if got := replay(last.header, last.body); got != http.StatusBadRequest {
		t.Errorf("replay after the tolerance: status %d, want 400", got)
	}
	fresh := last.header.Clone()
	fresh.Set("webhook-timestamp", strconv.FormatInt(time.Now().Add(webhookTolerance+time.Minute).Unix(), 10))
	if got := replay(fresh, last.body); got != http.StatusUnauthorized {
		t.Errorf("replay with a refreshed timestamp: status %d, want 401 (the timestamp is signed)", got)
	}
	rc.mu.Lock()
	rc.now = time.Now
	rc.mu.Unlock()
	if got := replay(last.header, append(bytes.Clone(last.body), ' ')); got != http.StatusUnauthorized {
		t.Errorf("tampered body: status %d, want 401", got)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for id, n := range rc.applied {
		if n != 1 {
			t.Errorf("event %s applied %d times", id, n)
		}
	}
	if rc.dups != 1 {
		t.Errorf("duplicates recognised: %d, want 1 (the immediate replay)", rc.dups)
	}
	if got, want := strings.Join(rc.rejected, "; "), "timestamp outside the tolerance (replay?); no valid signature; no valid signature"; got != want {
		t.Errorf("rejections: %s, want %s", got, want)
	}
}

func newWebhookSecret() string {
	var b [24]byte
	rand.Read(b[:])
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}

func randomSecret(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// ---- secrets in logs ----

// TestNoSecretsInLogs runs the relay and the sink at LOG_LEVEL=debug with a
// password in DATABASE_URL (URL form for the relay, key=value for the sink),
// NATS credentials (user and password, a token, or either embedded in
// NATS_URLS: nats://user:pass@host, nats://token@host), a WEBHOOK_SECRET and a token in the webhook URL's query; pushes
// events through a NATS restart, a Postgres crash and failing webhook calls;
// runs the status commands and scrapes /readyz and /metrics; and scans every
// line for the secrets.
func TestNoSecretsInLogs(t *testing.T) {
	t.Parallel()
	pg := testutil.StartPostgres(t)
	relayBin, sinkBin := testutil.BuildBinary(t, "relay"), testutil.BuildBinary(t, "sink")
	pgPass := randomSecret("pgpw")
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin := mustPool(t, ctx, pg.URL("postgres"), 1)
		defer admin.Close()
		// Trust authentication accepts any password: the point is the string.
		if _, err := admin.Exec(ctx, `CREATE ROLE bridge LOGIN SUPERUSER REPLICATION PASSWORD '`+pgPass+`'`); err != nil {
			t.Fatal(err)
		}
	}()

	for _, mode := range []string{"user-password", "token", "credentials-in-urls", "token-in-urls"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			natsUser, natsPass, natsToken := "bridge", randomSecret("natspw"), randomSecret("natstok")
			conf := fmt.Sprintf("authorization { users: [ { user: %s, password: %s } ] }\n", natsUser, natsPass)
			if mode == "token" || mode == "token-in-urls" {
				conf = fmt.Sprintf("authorization { token: %s }\n", natsToken)
			}
			ns, _ := testutil.StartNATSWithConfig(t, conf)
			secrets := map[string]string{"postgres password": pgPass}
			var natsEnv []string
			var clientOpt nats.Option
			switch mode {
			case "user-password":
				natsEnv = []string{"NATS_URLS=" + ns.URL(), "NATS_USER=" + natsUser, "NATS_PASSWORD=" + natsPass}
				secrets["nats password"] = natsPass
				clientOpt = nats.UserInfo(natsUser, natsPass)
			case "token":
				natsEnv = []string{"NATS_URLS=" + ns.URL(), "NATS_TOKEN=" + natsToken}
				secrets["nats token"] = natsToken
				clientOpt = nats.Token(natsToken)
			case "credentials-in-urls":
				natsEnv = []string{"NATS_URLS=" + strings.Replace(ns.URL(), "nats://", "nats://"+natsUser+":"+natsPass+"@", 1)}
				secrets["nats password (in NATS_URLS)"] = natsPass
				clientOpt = nats.UserInfo(natsUser, natsPass)
			case "token-in-urls":
				natsEnv = []string{"NATS_URLS=" + strings.Replace(ns.URL(), "nats://", "nats://"+natsToken+"@", 1)}
				secrets["nats token (in NATS_URLS)"] = natsToken
				clientOpt = nats.Token(natsToken)
			}
			webhookSecret, urlToken := newWebhookSecret(), randomSecret("urltok")
			secrets["webhook secret"] = strings.TrimPrefix(webhookSecret, "whsec_")
			secrets["webhook url token"] = urlToken
			rc, srv := newReceiver(t, webhookKey(t, webhookSecret))

			src, dst := "src_"+strings.ReplaceAll(mode, "-", "_"), "dst_"+strings.ReplaceAll(mode, "-", "_")
			for _, db := range []string{src, dst} {
				if err := pg.CreateDatabase(ctx, db); err != nil {
					t.Fatal(err)
				}
			}
			relayAddr, sinkAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
			relayEnv := append([]string{
				fmt.Sprintf("DATABASE_URL=postgres://bridge:%s@127.0.0.1:%d/%s?sslmode=disable", pgPass, pg.Port(), src),
				"APP_NAME=app_a", "DESTINATION_APP=app_b", "REPLICATION_SLOT=sec_" + src, "LOG_LEVEL=debug",
				"HTTP_ADDR=" + relayAddr, "STATUS_INTERVAL=200ms",
			}, natsEnv...)
			sinkEnv := append([]string{
				fmt.Sprintf("DATABASE_URL=host=127.0.0.1 port=%d user=bridge password=%s dbname=%s sslmode=disable", pg.Port(), pgPass, dst),
				"APP_NAME=app_b", "DESTINATION_APP=app_a", "HANDLER=" + srv.URL + "/hook?token=" + urlToken,
				"WEBHOOK_SECRET=" + webhookSecret, "ROUTES_FILE=", "LOG_LEVEL=debug", "HTTP_ADDR=" + sinkAddr,
				"ACK_WAIT=2s", "BACKOFF=200ms",
			}, natsEnv...)

			var outputs []string
			run := func(bin string, env []string, args ...string) {
				t.Helper()
				p := testutil.StartProcess(t, bin, env, args...)
				p.Wait(time.Minute)
				outputs = append(outputs, p.Output())
			}
			run(relayBin, relayEnv, "provision")
			relay := testutil.StartProcess(t, relayBin, relayEnv)
			sinkP := testutil.StartProcess(t, sinkBin, sinkEnv)
			srcPool := mustPool(t, ctx, pg.URL(src), 2)

			inserted := 0
			insert := func(n int) {
				t.Helper()
				for range n {
					id := testutil.NewUUID()
					if inserted%10 == 0 {
						rc.mu.Lock()
						rc.failFirst[id] = true
						rc.mu.Unlock()
					}
					inserted++
					for {
						_, err := srcPool.Exec(ctx, `INSERT INTO jetstream_outbox_events (event_id, resource_type, resource_id, event_type, payload)
							VALUES ($1, 'user', $2, 'updated', '{}')`, id, strconv.Itoa(inserted%4))
						if err == nil {
							break
						}
						if ctx.Err() != nil {
							t.Fatal(err)
						}
						time.Sleep(200 * time.Millisecond) // Postgres restarting
					}
				}
			}
			waitApplied := func() {
				t.Helper()
				testutil.Eventually(t, 90*time.Second, func() error {
					if n, _ := rc.count(); n < inserted {
						return fmt.Errorf("%d of %d applied; relay:\n%s\nsink:\n%s", n, inserted, testutil.Tail(relay.Output(), 3), testutil.Tail(sinkP.Output(), 3))
					}
					return nil
				})
			}
			insert(20)
			waitApplied()
			if err := ns.Restart(); err != nil {
				t.Fatal(err)
			}
			insert(10)
			if err := pg.Restart(ctx, "immediate"); err != nil {
				t.Fatal(err)
			}
			insert(10)
			waitApplied()
			for _, path := range []string{"http://" + relayAddr + "/readyz", "http://" + relayAddr + "/metrics",
				"http://" + sinkAddr + "/readyz", "http://" + sinkAddr + "/metrics"} {
				if resp, err := http.Get(path); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					outputs = append(outputs, string(b))
				}
			}
			run(relayBin, relayEnv, "status")
			run(sinkBin, sinkEnv, "status")
			run(sinkBin, sinkEnv, "dlq", "list")
			// A refused webhook URL carrying credentials.
			run(sinkBin, append(append([]string{}, sinkEnv...), "HANDLER=http://user:"+urlToken+"@127.0.0.1:1/hook"))
			// Connection failures: NATS down at start, then a wrong database.
			ns.Shutdown()
			for _, bin := range []string{relayBin, sinkBin} {
				env := relayEnv
				if bin == sinkBin {
					env = sinkEnv
				}
				p := testutil.StartProcess(t, bin, env)
				time.Sleep(1500 * time.Millisecond)
				p.Signal(syscall.SIGTERM)
				p.Wait(30 * time.Second)
				outputs = append(outputs, p.Output())
			}
			if err := ns.Start(); err != nil {
				t.Fatal(err)
			}
			for _, p := range []*testutil.Process{relay, sinkP} {
				p.Signal(syscall.SIGTERM)
				if err := p.Wait(40 * time.Second); err != nil {
					t.Errorf("SIGTERM: %v", err)
				}
				outputs = append(outputs, p.Output())
			}
			if _, rejected := rc.count(); rejected != 0 {
				t.Errorf("%d webhook requests failed verification", rejected)
			}
			// The credentials really were used: the admin view works with them.
			if nc, err := nats.Connect(ns.URL(), clientOpt); err != nil {
				t.Errorf("connect with the test's own credentials: %v", err)
			} else {
				nc.Close()
			}

			lines := 0
			for _, out := range outputs {
				for _, line := range strings.Split(out, "\n") {
					lines++
					for what, s := range secrets {
						if strings.Contains(line, s) {
							t.Errorf("%s leaked: %s", what, line)
						}
					}
				}
			}
			if !strings.Contains(strings.Join(outputs, "\n"), `"level":"debug"`) {
				t.Errorf("no debug lines captured: LOG_LEVEL=debug was not in effect")
			}
			t.Logf("%s: %d log lines from %d processes and endpoints scanned for %d secrets", mode, lines, len(outputs), len(secrets))
		})
	}
}

// ---- least privilege ----

const leastPrivilegeConf = `
accounts {
  BRIDGE {
    jetstream: enabled
    users: [
      { user: admin, password: adminpw }
      { user: relay, password: relaypw, permissions: {
          publish: ["app_a.sync.>"]
          subscribe: ["_INBOX.>"]
      } }
      { user: sink, password: sinkpw, permissions: {
          publish: [%s]
          subscribe: ["_INBOX.>"]
      } }
    ]
  }
}
`

// sinkPublishPermissions is all a sink may publish with
// AUTO_PROVISION=false: pull requests, replies on its messages' ack subjects
// (ack, nak, in-progress, term) and dead letters. No JetStream API call
// beyond the pull itself: not even $JS.API.CONSUMER.INFO to bind.
var sinkPublishPermissions = []string{
	`"$JS.API.CONSUMER.MSG.NEXT.jetstream-bridge-stream.app_b-workers"`,
	`"$JS.ACK.jetstream-bridge-stream.app_b-workers.>"`,
	`"app_b.sync.dlq"`,
}

// TestLeastPrivilegeRestrictedUsers provisions the stream, consumer, slot
// and tables as an admin user, then runs the relay and the sink
// (AUTO_PROVISION=false) as NATS users that may publish only what each
// needs — the relay app_a.sync.>, the sink its pulls, acks and dead letters
// — and subscribe only to _INBOX.>: events flow end to end, both
// dead-letter paths work, SIGTERM hands messages back and exits 0, and no
// permissions violation shows in any log.
func TestLeastPrivilegeRestrictedUsers(t *testing.T) {
	t.Parallel()
	runLeastPrivilege(t, sinkPublishPermissions)
}

func runLeastPrivilege(t *testing.T, sinkPerms []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(fmt.Sprintf(leastPrivilegeConf, strings.Join(sinkPerms, ", "))), 0o600); err != nil {
		t.Fatal(err)
	}
	ns, err := localenv.StartNATS(localenv.NATSOptions{Dir: filepath.Join(dir, "js"), ConfigFile: confPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	src, dst := testutil.NewDatabase(t), testutil.NewDatabase(t)
	dstPool := mustPool(t, ctx, dst, 2)
	if _, err := dstPool.Exec(ctx, `
		CREATE TABLE effects (id bigserial PRIMARY KEY, event_id text NOT NULL);
		CREATE FUNCTION public.lp_apply(e jsonb) RETURNS void LANGUAGE plpgsql AS $$
		BEGIN
			IF e -> 'payload' ->> 'refuse' = 'yes' THEN
				RAISE EXCEPTION 'refused' USING ERRCODE = 'JBDLQ';
			END IF;
			INSERT INTO effects (event_id) VALUES (e ->> 'event_id');
		END $$`); err != nil {
		t.Fatal(err)
	}
	relayBin, sinkBin := testutil.BuildBinary(t, "relay"), testutil.BuildBinary(t, "sink")
	slot := fmt.Sprintf("lp_%d", time.Now().UnixNano()%1e9)
	relayEnv := []string{"DATABASE_URL=" + src, "NATS_URLS=" + ns.URL(), "APP_NAME=app_a", "DESTINATION_APP=app_b",
		"REPLICATION_SLOT=" + slot, "LOG_LEVEL=debug", "HTTP_ADDR=", "STATUS_INTERVAL=200ms", "AUTO_PROVISION=false",
		"NATS_USER=relay", "NATS_PASSWORD=relaypw"}
	sinkEnv := []string{"DATABASE_URL=" + dst, "NATS_URLS=" + ns.URL(), "APP_NAME=app_b", "DESTINATION_APP=app_a",
		"HANDLER=sql:public.lp_apply", "ROUTES_FILE=", "LOG_LEVEL=debug", "HTTP_ADDR=", "AUTO_PROVISION=false",
		"ACK_WAIT=2s", "BACKOFF=300ms", "NATS_USER=sink", "NATS_PASSWORD=sinkpw"}
	admin := []string{"NATS_USER=admin", "NATS_PASSWORD=adminpw"}
	for _, pr := range []struct {
		bin string
		env []string
	}{{relayBin, relayEnv}, {sinkBin, sinkEnv}} {
		p := testutil.StartProcess(t, pr.bin, append(append([]string{}, pr.env...), admin...), "provision")
		if err := p.Wait(time.Minute); err != nil {
			t.Fatalf("provision as admin: %v\n%s", err, p.Output())
		}
	}
	relay := testutil.StartProcess(t, relayBin, relayEnv)
	sinkP := testutil.StartProcess(t, sinkBin, sinkEnv)
	procs := []*testutil.Process{relay, sinkP}
	violations := func() string {
		var v []string
		for _, p := range procs {
			for _, line := range strings.Split(p.Output(), "\n") {
				if strings.Contains(strings.ToLower(line), "permissions violation") {
					v = append(v, line)
				}
			}
		}
		return strings.Join(v, "\n")
	}

	srcPool := mustPool(t, ctx, src, 2)
	const events = 30
	for i := range events {
		payload := `{}`
		if i == 7 {
			payload = `{"refuse": "yes"}` // the sink dead-letters it
		}
		if _, err := srcPool.Exec(ctx, `INSERT INTO jetstream_outbox_events (resource_type, resource_id, event_type, payload)
			VALUES ('user', $1, 'updated', $2::jsonb)`, strconv.Itoa(i%5), payload); err != nil {
			t.Fatal(err)
		}
	}
	// The relay dead-letters a row it cannot publish as asked.
	if _, err := srcPool.Exec(ctx, `INSERT INTO jetstream_outbox_events (resource_type, event_type, payload, subject)
		VALUES ('bad', 'subject', '{}', 'has space')`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		var n int
		if err := dstPool.QueryRow(ctx, `SELECT count(DISTINCT event_id) FROM effects`).Scan(&n); err != nil {
			return err
		}
		if n < events-1 {
			if violations() != "" {
				return nil // no point waiting: reported below
			}
			return fmt.Errorf("%d of %d applied; relay:\n%s\nsink:\n%s", n, events-1, testutil.Tail(relay.Output(), 4), testutil.Tail(sinkP.Output(), 4))
		}
		return nil
	})
	if v := violations(); v != "" {
		t.Fatalf("permission violations logged:\n%s", v)
	}
	nc, err := nats.Connect(ns.URL(), nats.UserInfo("admin", "adminpw"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	testutil.Eventually(t, 30*time.Second, func() error {
		st, err := js.Stream(ctx, streamName)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("*.sync.dlq"))
		if err != nil {
			return err
		}
		if info.State.Subjects["app_a.sync.dlq"] != 1 || info.State.Subjects["app_b.sync.dlq"] != 1 {
			return fmt.Errorf("dead letters by subject: %v, want one relay and one sink dead letter", info.State.Subjects)
		}
		return nil
	})
	for _, p := range procs {
		p.Signal(syscall.SIGTERM)
		if err := p.Wait(40 * time.Second); err != nil {
			t.Errorf("SIGTERM: %v\n%s", err, testutil.Tail(p.Output(), 5))
		}
	}
	if v := violations(); v != "" {
		t.Errorf("permission violations logged:\n%s", v)
	}
	t.Logf("relay may publish only app_a.sync.>; sink only %s; both subscribe only _INBOX.>", strings.Join(sinkPerms, ", "))
}
