package relay_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

// TestSyncFenceLooksUpAfterTheStandbyConfirms: an event held at the fence
// when the fence's connection fails is looked up in the outbox once the
// fence reconnects. Its writer may still be waiting for the synchronous
// standby then (after a Postgres restart or a promotion the standby takes
// seconds to connect): the row is committed locally but not yet visible.
// The lookup must wait behind the fence's own commit, or it takes the
// event for a phantom, drops it, and the event is lost when the writer's
// commit returns.
func TestSyncFenceLooksUpAfterTheStandbyConfirms(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := startSyncPair(t)
	primary, standby, url, stream := p.primary, p.standby, p.url, p.stream
	r := p.relay(t, "relay_fence_lookup", relay.FenceAuto, &counts{})
	run(t, r)
	writer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close(ctx)
	admin, err := pgx.Connect(ctx, primary.URL("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	fencePID := func() (int, error) {
		var pid int
		err := admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
			WHERE application_name = 'jetstream-bridge-relay-fence' AND wait_event = 'SyncRep'`).Scan(&pid)
		return pid, err
	}

	resume := standby.PauseReceiver()
	id := testutil.NewUUID()
	committed := make(chan error, 1)
	go func() {
		_, err := writer.Exec(ctx, "INSERT INTO "+table+" (event_id, resource_type, event_type) VALUES ($1::uuid, 'order', 'created')", id)
		committed <- err
	}()
	// Held at the fence, whose commit waits for the standby.
	var first int
	testutil.Eventually(t, 30*time.Second, func() error {
		if held, _ := r.FenceHeld(); held != 1 {
			return errors.New("event not held at the fence yet")
		}
		first, err = fencePID()
		return err
	})
	// The fence loses its server: the held event becomes unsure.
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", first); err != nil {
		t.Fatal(err)
	}
	// The fence reconnects and its next round (lookup and fence) waits on
	// the standby, the writer still waits too.
	testutil.Eventually(t, 30*time.Second, func() error {
		pid, err := fencePID()
		if err != nil || pid == first {
			return fmt.Errorf("fence not waiting on a new connection yet (%v)", err)
		}
		return nil
	})
	select {
	case err := <-committed:
		t.Fatalf("the writer's commit returned while the standby was stopped: %v", err)
	default:
	}

	resume()
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the writer's commit did not return after the standby resumed")
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if !streamHas(ctx, stream, id) {
			return fmt.Errorf("event %s committed but not published: the fence took it for a phantom", id)
		}
		return nil
	})
}
