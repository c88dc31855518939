package provision_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// TestEnsureStreamMergesBothSides: two apps share one stream; each adds its
// wildcard, a narrower subject already present is replaced, and re-running
// changes nothing.
func TestEnsureStreamMergesBothSides(t *testing.T) {
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	ctx := context.Background()
	log := zerolog.Nop()
	spec := func(app string) provision.StreamSpec {
		return provision.StreamSpec{Name: "bridge", Subjects: []string{app + ".sync.>", app + ".sync.dlq"},
			Fallback: []string{app + ".sync.other"}, Duplicates: time.Minute}
	}
	// The sink of b provisioned first with its narrow subjects.
	if _, err := provision.EnsureStream(ctx, js, provision.StreamSpec{Name: "bridge", Subjects: []string{"b.sync.dlq", "a.sync.b"}}, log); err != nil {
		t.Fatal(err)
	}
	if _, err := provision.EnsureStream(ctx, js, spec("a"), log); err != nil {
		t.Fatal(err)
	}
	info, err := provision.EnsureStream(ctx, js, spec("b"), log)
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
	js := testutil.ConnectJS(t, testutil.StartNATS(t).URL())
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "legacy", Subjects: []string{"a.sync.b"}}); err != nil {
		t.Fatal(err)
	}
	info, err := provision.EnsureStream(ctx, js, provision.StreamSpec{Name: "bridge",
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
