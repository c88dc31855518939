package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestTraceAppRelaySinkWebhook: the relay and the sink run as processes
// exporting to an OTLP/HTTP receiver; one outbox row written with the
// application's traceparent yields one trace, app → relay → sink → webhook,
// and the webhook receiver gets a traceparent of that trace whose parent is
// the webhook call's span. The relay exports only when it stops (a schedule
// delay of ten minutes): SIGTERM flushes its spans before it exits.
func TestTraceAppRelaySinkWebhook(t *testing.T) {
	const (
		appTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		appSpan  = "00f067aa0ba902b7"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	otlp := testutil.StartOTLPReceiver(t)
	var (
		mu       sync.Mutex
		received []string // traceparent of each webhook call
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		received = append(received, r.Header.Get("Traceparent"))
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)

	db, natsURL := testutil.NewDatabase(t), testutil.StartNATS(t).URL()
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlp.URL,
		"OTEL_SERVICE_NAME=", "OTEL_RESOURCE_ATTRIBUTES=", "OTEL_TRACES_SAMPLER=", "OTEL_SDK_DISABLED=", "OTEL_TRACES_EXPORTER="}
	common := append([]string{"DATABASE_URL=" + db, "NATS_URLS=" + natsURL, "LOG_LEVEL=info", "HTTP_ADDR=", "ENV_NAME="}, otel...)
	relay := testutil.StartProcess(t, testutil.BuildBinary(t, "relay"), append(common,
		"APP_NAME=orders", "DESTINATION_APP=billing", "STATUS_INTERVAL=100ms", "OTEL_BSP_SCHEDULE_DELAY=600000",
		fmt.Sprintf("REPLICATION_SLOT=trace_test_%d", time.Now().UnixNano()%1e9)))
	waitLog(t, relay, `"message":"replicating"`)
	sink := testutil.StartProcess(t, testutil.BuildBinary(t, "sink"), append(common,
		"APP_NAME=billing", "DESTINATION_APP=orders", "HANDLER="+hook.URL+"/events", "ROUTES_FILE=", "FILTER_SUBJECT=",
		"OTEL_BSP_SCHEDULE_DELAY=100"))
	waitLog(t, sink, `"message":"consuming"`)

	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var eventID string
	if err := conn.QueryRow(ctx, `INSERT INTO jetstream_outbox_events (resource_type, resource_id, event_type, payload, headers)
		VALUES ('order', '42', 'order.created', '{"total": 10}', jsonb_build_object('traceparent', $1::text))
		RETURNING event_id::text`, "00-"+appTrace+"-"+appSpan+"-01").Scan(&eventID); err != nil {
		t.Fatal(err)
	}

	// The sink's spans arrive; then the relay's, flushed on SIGTERM.
	var relaySpan, applySpan, hookSpan testutil.Span
	find := func() {
		relaySpan, applySpan, hookSpan = testutil.Span{}, testutil.Span{}, testutil.Span{}
		for _, s := range otlp.Spans() {
			switch {
			case s.Service == "jetstream-bridge-relay" && s.Attrs["messaging.message.id"] == eventID:
				relaySpan = s
			case s.Service == "jetstream-bridge-sink" && s.Attrs["messaging.message.id"] == eventID:
				applySpan = s
			case s.Service == "jetstream-bridge-sink" && s.Name == http.MethodPost:
				hookSpan = s
			}
		}
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if find(); applySpan.SpanID == "" || hookSpan.SpanID == "" {
			return fmt.Errorf("sink spans so far: %+v", otlp.Spans())
		}
		return nil
	})
	if relaySpan.SpanID != "" {
		t.Fatalf("the relay exported before it stopped: %+v", relaySpan)
	}
	if err := relay.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := relay.Wait(30 * time.Second); err != nil {
		t.Fatalf("relay after SIGTERM: %v", err)
	}
	if find(); relaySpan.SpanID == "" {
		t.Fatalf("the relay's span was not flushed at shutdown: %+v", otlp.Spans())
	}

	// One trace, each span the child of the one before.
	for _, c := range []struct {
		name   string
		s      testutil.Span
		parent string
	}{{"relay", relaySpan, appSpan}, {"sink apply", applySpan, relaySpan.SpanID}, {"webhook", hookSpan, applySpan.SpanID}} {
		if c.s.TraceID != appTrace || c.s.ParentID != c.parent {
			t.Errorf("%s span in trace %s with parent %s, want trace %s parent %s: %+v", c.name, c.s.TraceID, c.s.ParentID, appTrace, c.parent, c.s)
		}
		if c.s.Error {
			t.Errorf("%s span has error status: %+v", c.name, c.s)
		}
	}
	for k, want := range map[string]string{"messaging.system": "nats", "messaging.destination.name": "orders.sync.billing",
		"jetstream_bridge.outcome": "stored"} {
		if got := relaySpan.Attrs[k]; got != want {
			t.Errorf("relay span %s=%q, want %q", k, got, want)
		}
	}
	if !strings.Contains(relaySpan.Attrs["jetstream_bridge.commit_lsn"], "/") {
		t.Errorf("relay span without a commit LSN: %+v", relaySpan.Attrs)
	}
	for k, want := range map[string]string{"jetstream_bridge.status": "processed", "jetstream_bridge.event_type": "order.created",
		"jetstream_bridge.attempt": "1", "jetstream_bridge.handler": hook.URL + "/events"} {
		if got := applySpan.Attrs[k]; got != want {
			t.Errorf("sink span %s=%q, want %q", k, got, want)
		}
	}
	if got := hookSpan.Attrs["http.response.status_code"]; got != "200" {
		t.Errorf("webhook span status code %q", got)
	}

	// The webhook receiver saw the trace, its parent the webhook span.
	mu.Lock()
	got := append([]string(nil), received...)
	mu.Unlock()
	if want := "00-" + appTrace + "-" + hookSpan.SpanID + "-01"; len(got) != 1 || got[0] != want {
		t.Errorf("webhook traceparent %q, want [%s]", got, want)
	}

	// On the wire the message's traceparent is the relay span's; the body's
	// trace_id is the row's, as the gem writes it.
	js := testutil.ConnectJS(t, natsURL)
	s, err := js.Stream(ctx, "jetstream-bridge-stream")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get("traceparent"), "00-"+appTrace+"-"+relaySpan.SpanID+"-01"; got != want {
		t.Errorf("message traceparent %q, want %q", got, want)
	}
	if !strings.Contains(string(msg.Data), `"trace_id":"`+appTrace+`"`) {
		t.Errorf("body trace_id changed: %s", msg.Data)
	}
}

// waitLog waits until p logs line, failing when p exits first.
func waitLog(t *testing.T, p *testutil.Process, line string) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() error {
		if strings.Contains(p.Output(), line) {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("process exited: %s", testutil.Tail(p.Output(), 20))
		default:
		}
		return fmt.Errorf("waiting for %s", line)
	})
}
