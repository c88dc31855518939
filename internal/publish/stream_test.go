package publish_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/publish"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestCoversAndOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b            string
		covers, overlap bool
	}{
		{"a.sync.>", "a.sync.b", true, true},
		{"a.sync.>", "a.sync.dlq", true, true},
		{"a.sync.b", "a.sync.>", false, true},
		{"a.sync.*", "a.sync.b", true, true},
		{"a.sync.*", "a.sync.b.c", false, false},
		{"a.>", "a.sync.*", true, true},
		{"a.*", "a.>", false, true},
		{"a.sync.b", "a.sync.b", true, true},
		{"a.sync.b", "b.sync.a", false, false},
		{"a.sync.>", "a.sync", false, false},
		{"*.sync.b", "a.sync.*", false, true},
		{">", "x", true, true},
	} {
		if got := publish.Covers(tc.a, tc.b); got != tc.covers {
			t.Errorf("Covers(%q, %q)=%v, want %v", tc.a, tc.b, got, tc.covers)
		}
		if got := publish.Overlap(tc.a, tc.b); got != tc.overlap {
			t.Errorf("Overlap(%q, %q)=%v, want %v", tc.a, tc.b, got, tc.overlap)
		}
	}
}

func connect(t *testing.T) jetstream.JetStream {
	return connectTo(t, testutil.StartNATS(t).URL())
}

// connectTo connects to url; opts are the connection's options.
func connectTo(t *testing.T, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// reconnecting are connection options for tests that restart the server:
// reconnect at once and forever, fail publishes while disconnected.
var reconnecting = []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.ReconnectBufSize(-1)}

// TestEnsureStreamMergesBothSides: two apps share one stream; each adds its
// wildcard, a narrower subject already present is replaced, and re-running
// changes nothing.
func TestEnsureStreamMergesBothSides(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	log := zerolog.Nop()
	spec := func(app string) publish.StreamSpec {
		return publish.StreamSpec{Name: "bridge", Subjects: []string{app + ".sync.>", app + ".sync.dlq"},
			Fallback: []string{app + ".sync.other"}, Duplicates: time.Minute}
	}
	// The sink of b provisioned first with its narrow subjects.
	if _, err := publish.EnsureStream(ctx, js, publish.StreamSpec{Name: "bridge", Subjects: []string{"b.sync.dlq", "a.sync.b"}}, log); err != nil {
		t.Fatal(err)
	}
	if _, err := publish.EnsureStream(ctx, js, spec("a"), log); err != nil {
		t.Fatal(err)
	}
	info, err := publish.EnsureStream(ctx, js, spec("b"), log)
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(slices.Values(info.Config.Subjects))
	if want := []string{"a.sync.>", "b.sync.>"}; !slices.Equal(got, want) {
		t.Fatalf("subjects=%v, want %v", got, want)
	}
	if info.Config.Duplicates != time.Minute || info.Config.Storage != jetstream.FileStorage {
		t.Fatalf("duplicates=%v storage=%v", info.Config.Duplicates, info.Config.Storage)
	}
}

// TestEnsureStreamSkipsSubjectsOfOtherStreams: an existing stream owns
// a.sync.b; the wildcard falls back to the narrower subjects that do not
// overlap, and the stream is still created.
func TestEnsureStreamSkipsSubjectsOfOtherStreams(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "legacy", Subjects: []string{"a.sync.b"}}); err != nil {
		t.Fatal(err)
	}
	info, err := publish.EnsureStream(ctx, js, publish.StreamSpec{Name: "bridge",
		Subjects: []string{"a.sync.>", "a.sync.dlq"}, Fallback: []string{"a.sync.b"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Config.Subjects, []string{"a.sync.dlq"}; !slices.Equal(got, want) {
		t.Fatalf("subjects=%v, want %v", got, want)
	}
	// Publishing to a.sync.b lands in the legacy stream, a.sync.dlq in ours.
	ack, err := js.Publish(ctx, "a.sync.b", []byte("{}"))
	if err != nil || ack.Stream != "legacy" {
		t.Fatalf("a.sync.b stored in %v (%v), want legacy", ack, err)
	}
}
