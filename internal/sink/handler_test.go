package sink_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

func (e *env) exec(t testing.TB, sql ...string) {
	t.Helper()
	for _, s := range sql {
		if _, err := e.pool.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestParseHandlerSpec_RefusesInjection(t *testing.T) {
	for _, spec := range []string{
		"sql:public.x; drop table y",
		"sql:public.x;drop",
		`sql:"public"."x"`,
		`sql:public."x"`,
		"sql:public.x'--",
		"sql:public.x()",
		"sql:public.x($1)",
		"sql:Public.X",
		"sql:public",
		"sql:a.b.c",
		"sql:.x",
		"sql:public.",
		"sql:",
		"sql:public.x ",
		"sql:public.x\n",
		"sql:pub lic.x",
		"sql:1abc.x",
		"sql:public.x--comment",
		"sql:public./*x*/y",
		"sql:public." + strings.Repeat("a", 64),
		"",
		"public.x",
		"ftp://host/x",
		"http://",
		"https:///path",
		"http://user:pw@host/x",
	} {
		if _, _, err := sink.ParseHandlerSpec(spec); err == nil {
			t.Errorf("ParseHandlerSpec(%q) accepted it", spec)
		}
		if _, err := (&sink.Handlers{}).Build(context.Background(), spec); err == nil {
			t.Errorf("Handlers.Build(%q) accepted it", spec)
		}
	}
	for _, spec := range []string{"sql:public.apply_event", "sql:app_2.x1", "http://localhost:8080/hook", "https://example.com/a?b=c"} {
		if _, _, err := sink.ParseHandlerSpec(spec); err != nil {
			t.Errorf("ParseHandlerSpec(%q): %v", spec, err)
		}
	}
}

func FuzzParseHandlerSpec(f *testing.F) {
	for _, s := range []string{"sql:public.x", "sql:public.x; drop table y", "https://h/x", `sql:"a"."b"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		kind, target, err := sink.ParseHandlerSpec(spec)
		if err != nil || kind != sink.KindSQL {
			return
		}
		// Whatever is accepted is two plain identifiers: nothing to inject.
		for _, c := range target {
			if !(c == '_' || c == '.' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
				t.Fatalf("accepted %q with %q in its target", spec, c)
			}
		}
		if strings.Count(target, ".") != 1 {
			t.Fatalf("accepted %q: target %q is not schema.name", spec, target)
		}
	})
}

func TestNewSQLHandler_LooksUpAndChecks(t *testing.T) {
	e := newEnv(t)
	e.exec(t,
		`CREATE PROCEDURE public.p_ok(e jsonb) LANGUAGE sql AS $$ SELECT 1 $$`,
		`CREATE FUNCTION public.f_ok(e jsonb, extra int DEFAULT 0) RETURNS void LANGUAGE sql AS $$ SELECT $$`,
		`CREATE FUNCTION public.over(e jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$`,
		`CREATE FUNCTION public.over(e text) RETURNS void LANGUAGE sql AS $$ SELECT $$`,
		`CREATE FUNCTION public.wrong_type(e text) RETURNS void LANGUAGE sql AS $$ SELECT $$`,
		`CREATE FUNCTION public.two_args(e jsonb, x int) RETURNS void LANGUAGE sql AS $$ SELECT $$`,
		`CREATE FUNCTION public.no_args() RETURNS void LANGUAGE sql AS $$ SELECT $$`,
	)
	ctx := context.Background()
	for target, want := range map[string]string{
		"public.p_ok":       "",
		"public.f_ok":       "",
		"public.missing":    "no procedure or function",
		"nope.p_ok":         "no procedure or function",
		"public.over":       "ambiguous",
		"public.wrong_type": "single jsonb argument",
		"public.two_args":   "single jsonb argument",
		"public.no_args":    "single jsonb argument",
		"public.x; drop":    "plain lowercase identifiers",
	} {
		_, err := sink.NewSQLHandler(ctx, e.pool, target)
		switch {
		case want == "" && err != nil:
			t.Errorf("NewSQLHandler(%s): %v", target, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("NewSQLHandler(%s)=%v, want an error containing %q", target, err, want)
		}
	}
}

// TestSink_SQLHandlersThroughRoutes applies events with a SQL procedure, a SQL
// function, a procedure that refuses (SQLSTATE JBDLQ) and no route at all.
func TestSink_SQLHandlersThroughRoutes(t *testing.T) {
	e := newEnv(t)
	e.exec(t,
		`CREATE PROCEDURE public.apply_proc(e jsonb) LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO effects (event_id, note) VALUES (e->>'event_id', 'proc:' || (e->'payload'->>'n')); END $$`,
		`CREATE FUNCTION public.apply_fn(e jsonb) RETURNS int LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO effects (event_id, note) VALUES (e->>'event_id', 'fn:' || (e->>'resource_id')); RETURN 1; END $$`,
		`CREATE PROCEDURE public.refuse(e jsonb) LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO effects (event_id, note) VALUES (e->>'event_id', 'never committed');
		       RAISE EXCEPTION 'customer % unknown', e->>'resource_id' USING ERRCODE = 'JBDLQ'; END $$`,
	)
	routes, err := sink.ParseRoutes([]byte(`
routes:
  - resource_type: user
    handler: sql:public.apply_proc
  - subject: billing.*.orders
    event_type: invoice.updated
    handler: sql:public.apply_fn
  - resource_type: customer
    handler: sql:public.refuse
`))
	if err != nil {
		t.Fatal(err)
	}
	hs := &sink.Handlers{DB: e.pool}
	r, err := sink.NewRouter(context.Background(), routes, hs.Build)
	if err != nil {
		t.Fatal(err)
	}
	obs, _ := e.run(t, r, nil)
	e.publish(t, e.event(t, "u1", "user", "1", pos("0/1", 0)))
	e.publish(t, e.event(t, "i1", "invoice", "77", pos("0/1", 1)))
	e.publish(t, e.event(t, "c1", "customer", "9", pos("0/1", 2)))
	unrouted := e.event(t, "x1", "shipment", "5", pos("0/1", 3))
	e.publish(t, unrouted)

	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 2, sink.ResultDead: 2})
	e.waitSettled(t)
	rows, err := e.pool.Query(context.Background(), `SELECT event_id || '=' || note FROM effects ORDER BY event_id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"i1=fn:77", "u1=proc:1"}; !slices.Equal(got, want) {
		t.Fatalf("effects=%v, want %v", got, want)
	}
	dls := e.deadLetters(t)
	byEvent := map[string]*sink.DeadLetter{}
	for _, dl := range dls {
		byEvent[dl.EventID] = dl
	}
	if dl := byEvent["c1"]; dl == nil || dl.Class != envelope.ClassHandler || !strings.Contains(dl.Error, "customer 9 unknown") || dl.Deliveries != 1 {
		t.Fatalf("dead letter of c1: %+v", dl)
	}
	if dl := byEvent["x1"]; dl == nil || dl.Class != envelope.ClassPoison || dl.Error != "no route matches" {
		t.Fatalf("dead letter of x1: %+v", dl)
	}
	if r := e.inbox(t, "x1"); r == nil || r.Status != sink.StatusDead {
		t.Fatalf("inbox x1=%+v, want dead", r)
	}
}

// TestSink_NoEchoLoop: jetstream_publish inside a handler's transaction
// returns NULL and enqueues nothing, so a two-way sync cannot loop.
func TestSink_NoEchoLoop(t *testing.T) {
	e := newEnv(t)
	outbox, err := migrations.Outbox(migrations.Names{})
	if err != nil {
		t.Fatal(err)
	}
	e.exec(t, outbox,
		`CREATE PROCEDURE public.echo(e jsonb) LANGUAGE plpgsql AS $$
		 DECLARE id uuid;
		 BEGIN
		   id := public.jetstream_publish('user', 'user.updated', e->'payload', e->>'resource_id');
		   INSERT INTO effects (event_id, note) VALUES (e->>'event_id',
		     coalesce(id::text, 'null') || ' applying=' || current_setting('jetstream_bridge.applying', true));
		 END $$`)
	h, err := sink.NewSQLHandler(context.Background(), e.pool, "public.echo")
	if err != nil {
		t.Fatal(err)
	}
	obs, _ := e.run(t, h, nil)
	e.publish(t, e.event(t, "u1", "user", "1", pos("0/1", 0)))
	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 1})

	var note string
	var inOutbox int
	if err := e.pool.QueryRow(context.Background(), `SELECT note FROM effects WHERE event_id = 'u1'`).Scan(&note); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM jetstream_outbox_events`).Scan(&inOutbox); err != nil {
		t.Fatal(err)
	}
	if note != "null applying=billing" || inOutbox != 0 {
		t.Fatalf("inside the handler: jetstream_publish gave %q, outbox has %d rows; want NULL (applying=billing) and 0", note, inOutbox)
	}
	// Outside the sink the same call publishes.
	var id *string
	if err := e.pool.QueryRow(context.Background(), `SELECT public.jetstream_publish('user', 'user.updated', '{}')::text`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if id == nil {
		t.Fatal("jetstream_publish outside a handler returned NULL")
	}
}

// webhookServer answers by event id and verifies every request.
type webhookServer struct {
	key      []byte
	mu       sync.Mutex
	calls    map[string]int
	problems []string
}

func (s *webhookServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	env, err := envelope.Parse(body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.problems = append(s.problems, "body: "+err.Error())
		w.WriteHeader(400)
		return
	}
	id := env.EventID
	s.calls[id]++
	check := func(ok bool, format string, args ...any) {
		if !ok {
			s.problems = append(s.problems, id+": "+fmt.Sprintf(format, args...))
		}
	}
	check(r.Method == http.MethodPost, "method %s", r.Method)
	check(r.Header.Get("Content-Type") == "application/json", "content-type %q", r.Header.Get("Content-Type"))
	check(r.Header.Get("Idempotency-Key") == id, "idempotency-key %q", r.Header.Get("Idempotency-Key"))
	check(r.Header.Get("webhook-id") == id, "webhook-id %q", r.Header.Get("webhook-id"))
	ts := r.Header.Get("webhook-timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	check(err == nil && time.Since(time.Unix(sec, 0)).Abs() < 5*time.Minute, "webhook-timestamp %q", ts)
	// Standard Webhooks verification, written out independently of sink.Sign.
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	check(hmac.Equal([]byte(r.Header.Get("webhook-signature")), []byte(want)), "webhook-signature %q, want %q",
		r.Header.Get("webhook-signature"), want)

	switch {
	case strings.HasPrefix(id, "flaky") && s.calls[id] == 1:
		w.WriteHeader(http.StatusServiceUnavailable)
	case strings.HasPrefix(id, "reject"):
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, "invalid customer"+strings.Repeat("!", 500))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func TestSink_Webhook(t *testing.T) {
	e := newEnv(t)
	key := []byte("a test signing key")
	ws := &webhookServer{key: key, calls: map[string]int{}}
	srv := httptest.NewServer(ws)
	defer srv.Close()
	h, err := sink.NewHTTPHandler(srv.URL+"/hooks/orders?token=abc", sink.HTTPOptions{
		Secret: "whsec_" + base64.StdEncoding.EncodeToString(key), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	obs, _ := e.run(t, h, nil)
	e.publish(t, e.event(t, "ok-1", "user", "1", pos("0/1", 0)))
	e.publish(t, e.event(t, "flaky-1", "user", "2", pos("0/1", 1)))
	reject := e.event(t, "reject-1", "user", "3", pos("0/1", 2))
	e.publish(t, reject)

	obs.waitFor(t, map[sink.Result]int{sink.ResultApplied: 2, sink.ResultDead: 1, sink.ResultRetried: 1})
	e.waitSettled(t)
	ws.mu.Lock()
	calls, problems := ws.calls, ws.problems
	ws.mu.Unlock()
	if len(problems) > 0 {
		t.Fatalf("webhook requests failed verification: %v", problems)
	}
	if calls["ok-1"] != 1 || calls["flaky-1"] != 2 || calls["reject-1"] != 1 {
		t.Fatalf("calls=%v, want ok-1 once, flaky-1 twice (503 then 2xx), reject-1 once", calls)
	}
	dls := e.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	wantReason := "http 422: invalid customer" + strings.Repeat("!", 256-len("invalid customer"))
	checkDeadLetter(t, dls[0], reject, envelope.ClassHandler, wantReason, 1)
	if dls[0].Error != wantReason {
		t.Fatalf("Bridge-Error=%q, want the status and the first 256 bytes of the body", dls[0].Error)
	}
	for id, status := range map[string]string{"ok-1": sink.StatusProcessed, "flaky-1": sink.StatusProcessed, "reject-1": sink.StatusDead} {
		if r := e.inbox(t, id); r == nil || r.Status != status {
			t.Fatalf("inbox %s=%+v, want %s", id, r, status)
		}
	}
}

func TestHTTPHandler_Classifies(t *testing.T) {
	status := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("webhook-signature") != "" {
			t.Errorf("signed without a secret")
		}
		w.Header().Set("Location", "/elsewhere")
		w.WriteHeader(status)
	}))
	defer srv.Close()
	h, err := sink.NewHTTPHandler(srv.URL, sink.HTTPOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ev := &sink.Event{Envelope: &envelope.Envelope{EventID: "e"}, Body: []byte(`{}`)}
	for _, tc := range []struct {
		status    int
		permanent bool
	}{
		{200, false}, {204, false}, {408, false}, {429, false}, {500, false}, {502, false}, {503, false},
		{301, true}, {400, true}, {401, true}, {404, true}, {409, true}, {422, true},
	} {
		status = tc.status
		err := h.Handle(context.Background(), nil, ev)
		ok := tc.status < 300
		var perm *sink.PermanentError
		switch {
		case ok && err != nil:
			t.Errorf("status %d: %v, want success", tc.status, err)
		case !ok && err == nil:
			t.Errorf("status %d: success, want an error", tc.status)
		case !ok && errors.As(err, &perm) != tc.permanent:
			t.Errorf("status %d: permanent=%v, want %v (%v)", tc.status, !tc.permanent, tc.permanent, err)
		}
	}
	// Connection refused is retryable.
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	h2, _ := sink.NewHTTPHandler(url, sink.HTTPOptions{Timeout: time.Second})
	var perm *sink.PermanentError
	if err := h2.Handle(context.Background(), nil, ev); err == nil || errors.As(err, &perm) {
		t.Fatalf("connection refused: %v, want a retryable error", err)
	}
}

func TestDecodeWebhookSecret(t *testing.T) {
	key, err := sink.DecodeWebhookSecret("whsec_" + base64.StdEncoding.EncodeToString([]byte("k3y")))
	if err != nil || string(key) != "k3y" {
		t.Fatalf("whsec_ form: %q, %v", key, err)
	}
	if key, err := sink.DecodeWebhookSecret("plain-secret"); err != nil || string(key) != "plain-secret" {
		t.Fatalf("raw form: %q, %v", key, err)
	}
	_, err = sink.DecodeWebhookSecret("whsec_not*base64")
	if err == nil || strings.Contains(err.Error(), "not*base64") {
		t.Fatalf("bad whsec_: %v (must fail without echoing the secret)", err)
	}
	// Standard Webhooks' published test vector.
	k, _ := sink.DecodeWebhookSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	got := sink.Sign(k, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign=%s, want %s", got, want)
	}
}

// TestHTTPHandler_KeepsConcurrencyConnections: with more calls in flight
// than the transport's usual 64 idle connections per host, a second wave
// of as many calls reuses the connections of the first instead of opening
// new ones.
func TestHTTPHandler_KeepsConcurrencyConnections(t *testing.T) {
	const conc = 100
	var (
		mu      sync.Mutex
		opened  int
		arrived int
		waves   = [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived++
		all := waves[(arrived-1)/conc]
		if arrived%conc == 0 {
			close(all)
		}
		mu.Unlock()
		select { // hold a wave's calls until all of it is in flight at once
		case <-all:
		case <-time.After(20 * time.Second):
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			opened++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	h, err := sink.NewHTTPHandler(srv.URL, sink.HTTPOptions{Timeout: 30 * time.Second, Concurrency: conc})
	if err != nil {
		t.Fatal(err)
	}
	wave := func() {
		var wg sync.WaitGroup
		for i := range conc {
			wg.Go(func() {
				ev := &sink.Event{Envelope: &envelope.Envelope{EventID: fmt.Sprint("e", i)}, Body: []byte(`{}`)}
				if err := h.Handle(context.Background(), nil, ev); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	wave()
	mu.Lock()
	first := opened
	mu.Unlock()
	if first != conc {
		t.Fatalf("%d connections for %d concurrent calls", first, conc)
	}
	wave()
	mu.Lock()
	defer mu.Unlock()
	if opened != first {
		t.Errorf("the second wave of %d calls opened %d new connections; want none", conc, opened-first)
	}
}
