package main_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// OUTBOX_TABLE is the Ruby gem's outbox table, as its migration creates it.
// Before provisioning the relay refuses to start, naming the missing
// columns and the fix, instead of dead-lettering every row;
// `relay provision --print-sql` shows the statements and changes nothing;
// after `relay provision` rows written through jetstream_publish and rows
// written as an app would (with only the gem's own columns filled besides
// event_type) are relayed, and the gem's columns keep their values.
func TestGemOutboxTableRefusedThenProvisionedAndRelayed(t *testing.T) {
	h := newHarness(t, testutil.NewDatabase(t), testutil.StartNATS(t).URL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := h.pool.Exec(ctx, testutil.GemOutboxDDL); err != nil {
		t.Fatal(err)
	}
	h.env = append(h.env, "OUTBOX_TABLE=public.jetstream_bridge_outbox_events")

	p := h.start("AUTO_PROVISION=false")
	if err := p.Wait(time.Minute); err == nil || !strings.Contains(p.Output(), "lacks columns event_type") ||
		!strings.Contains(p.Output(), "relay provision --print-sql") {
		t.Fatalf("relay on the gem's outbox before provisioning: %v\n%s", err, p.Output())
	}

	pr := testutil.StartProcess(t, h.bin, h.env, "provision", "--print-sql")
	if err := pr.Wait(time.Minute); err != nil {
		t.Fatalf("provision --print-sql: %v\n%s", err, pr.Output())
	}
	for _, want := range []string{
		`ALTER TABLE "public"."jetstream_bridge_outbox_events" ADD COLUMN IF NOT EXISTS event_type text;`,
		`ALTER TABLE "public"."jetstream_bridge_outbox_events" ALTER COLUMN subject DROP NOT NULL;`,
		`ALTER TABLE "public"."jetstream_bridge_outbox_events" ALTER COLUMN created_at SET DEFAULT now();`,
		"CREATE PUBLICATION",
	} {
		if !strings.Contains(pr.Output(), want) {
			t.Fatalf("--print-sql lacks %q:\n%s", want, pr.Output())
		}
	}
	var hasEventType bool
	if err := h.pool.QueryRow(ctx, `SELECT count(*) > 0 FROM information_schema.columns
		WHERE table_name = 'jetstream_bridge_outbox_events' AND column_name = 'event_type'`).Scan(&hasEventType); err != nil || hasEventType {
		t.Fatalf("--print-sql changed the table (event_type present: %v, %v)", hasEventType, err)
	}

	h.provision()
	p = h.start()
	waitReplicating(t, p)
	if _, err := h.pool.Exec(ctx, `SELECT jetstream_publish('user', 'user.created', '{"id":"1"}')`); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(ctx, `INSERT INTO public.jetstream_bridge_outbox_events
		(event_id, subject, payload, event_type, resource_type, resource_id, created_at, updated_at)
		VALUES ('gem-row-1', 'app_a.sync.app_b', '{"id":"2"}', 'user.updated', 'user', '2', now(), now())`); err != nil {
		t.Fatal(err)
	}
	h.waitCount(appA+".sync."+appB, 2, time.Minute, p)
	var status string
	if err := h.pool.QueryRow(ctx, `SELECT status FROM public.jetstream_bridge_outbox_events WHERE event_id = 'gem-row-1'`).Scan(&status); err != nil || status != "pending" {
		t.Fatalf("gem row status %q (%v), want its default kept", status, err)
	}
	if n, err := h.streamCount(appA + ".sync.dlq"); err != nil || n != 0 {
		t.Fatalf("%d dead letters (%v), want none", n, err)
	}
}
