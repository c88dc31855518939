package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
)

// StreamSpec is what the bridge needs from its stream.
type StreamSpec struct {
	Name       string
	Subjects   []string // in preference order; a subject another stream already covers is skipped
	Fallback   []string // used instead of Subjects[i] when a wildcard overlaps another stream (narrower subjects)
	Duplicates time.Duration
	Replicas   int
	// AllowBatch enables fast batch publishing on the stream (allow_batched,
	// nats-server 2.14+) when creating it or when it lacks it. Never turned
	// off here: another process may rely on it.
	AllowBatch bool
	// Retention is used only when creating the stream (STREAM_RETENTION;
	// zero is limits). JetStream cannot change an existing stream's
	// retention, and a work-queue stream created by the Ruby gem is worked
	// on as it is.
	Retention jetstream.RetentionPolicy
	// Wide maps a subject earlier versions added to the narrower subject
	// that replaces it (a {app}.sync.> tail by {app}.sync.*: the tail also
	// covers push deliver subjects such as the gem's {dest}.sync.{app}.worker,
	// and JetStream refuses a push consumer whose deliver subject the stream
	// stores). Found on the stream, it is reported; with Narrow it is
	// replaced.
	Wide   map[string]string
	Narrow bool
}

// EnsureStream creates the stream or updates it to cover spec's subjects,
// never adding a subject that overlaps one of another stream (JetStream would
// refuse it, and that stream already stores those messages). Skipped subjects
// are logged. Concurrent callers (several relays and sinks sharing one stream)
// converge: the update is re-read and retried until every wanted subject is
// present.
func EnsureStream(ctx context.Context, js jetstream.JetStream, spec StreamSpec, log zerolog.Logger) (*jetstream.StreamInfo, error) {
	if spec.Replicas <= 0 {
		spec.Replicas = 1
	}
	for attempt := 0; ; attempt++ {
		others, err := otherStreamSubjects(ctx, js, spec.Name)
		if err != nil {
			return nil, err
		}
		want, _ := mergeSubjects(nil, wantedSubjects(spec, others, log))
		info, err := js.Stream(ctx, spec.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if len(want) == 0 {
				return nil, fmt.Errorf("stream %s: every subject is already covered by other streams; nothing to create", spec.Name)
			}
			cfg := jetstream.StreamConfig{
				Name:       spec.Name,
				Subjects:   want,
				Storage:    jetstream.FileStorage,
				Retention:  spec.Retention,
				Duplicates: spec.Duplicates,
				Replicas:   spec.Replicas,

				AllowBatchPublish: spec.AllowBatch,
			}
			s, err := js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt < 5 {
				continue // another process created it first: merge into theirs
			}
			if err != nil {
				return nil, fmt.Errorf("create stream %s: %w", spec.Name, err)
			}
			log.Info().Str("stream", spec.Name).Strs("subjects", want).Dur("duplicates", spec.Duplicates).
				Str("retention", spec.Retention.String()).Bool("allow_batched", spec.AllowBatch).Msg("stream created")
			return s.CachedInfo(), nil
		case err != nil:
			return nil, fmt.Errorf("look up stream %s: %w", spec.Name, err)
		}
		cfg := info.CachedInfo().Config
		if attempt == 0 {
			noteRetention(cfg, spec, log)
		}
		have, narrowed := narrowSubjects(cfg, spec, attempt == 0, log)
		merged, changed := mergeSubjects(have, want)
		changed = changed || narrowed
		if spec.Duplicates > 0 && cfg.Duplicates != spec.Duplicates {
			cfg.Duplicates, changed = spec.Duplicates, true
		}
		if spec.AllowBatch && !cfg.AllowBatchPublish {
			cfg.AllowBatchPublish, changed = true, true
		}
		if !changed {
			return info.CachedInfo(), nil
		}
		cfg.Subjects = merged
		s, err := js.UpdateStream(ctx, cfg)
		if err != nil {
			if attempt < 5 {
				log.Debug().Err(err).Msg("stream update raced, retrying")
				continue
			}
			return nil, fmt.Errorf("update stream %s: %w", spec.Name, err)
		}
		got := s.CachedInfo().Config.Subjects
		if covered(got, want) {
			log.Info().Str("stream", spec.Name).Strs("subjects", got).Dur("duplicates", cfg.Duplicates).
				Bool("allow_batched", s.CachedInfo().Config.AllowBatchPublish).Msg("stream updated")
			return s.CachedInfo(), nil
		}
		if attempt >= 5 {
			return nil, fmt.Errorf("update stream %s: subjects %v still missing after retries", spec.Name, want)
		}
	}
}

// RelaySubjects are the subjects a relay for s provisions, in preference
// order, with the fallback for the first and the wide subject of earlier
// versions it replaces (StreamSpec.Wide). {app}.sync.* takes every
// destination (DESTINATION_APP, a row's destination, a subject override one
// token below .sync.) and the DLQ, but no deeper subject: push deliver
// subjects such as the Ruby gem's {dest}.sync.{app}.worker stay outside the
// stream, where JetStream requires them to be. With a destination the peer's
// side is covered too (PeerSubjects).
func RelaySubjects(s envelope.Subjects) (subjects, fallback []string, wide map[string]string) {
	prefix := ""
	if s.Env != "" {
		prefix = s.Env + "."
	}
	tail := prefix + s.App + ".sync."
	fallback = []string{s.Publish("")}
	if s.Dest == "" {
		fallback = nil
	}
	return append([]string{tail + "*", s.DLQ()}, PeerSubjects(s)...), fallback, map[string]string{tail + ">": tail + "*"}
}

// PeerSubjects are the subjects of the other side of the pair s names that
// a Ruby gem peer (APP_NAME=s.Dest, DESTINATION_APP=s.App) provisions:
// what it publishes to us (our filter), what it consumes (our publish
// subject) and its DLQ. The gem adds no subject to a stream whose retention
// is not workqueue, so on a limits stream created by the bridge its consumer
// could not be created and its dead letters and publishes would find no
// stream unless the bridge covers them. Nil without a destination.
func PeerSubjects(s envelope.Subjects) []string {
	if s.Dest == "" {
		return nil
	}
	peer := envelope.Subjects{Env: s.Env, App: s.Dest, Dest: s.App}
	return []string{s.Filter(), s.Publish(""), peer.DLQ()}
}

func otherStreamSubjects(ctx context.Context, js jetstream.JetStream, self string) (map[string][]string, error) {
	out := map[string][]string{}
	lister := js.ListStreams(ctx)
	for info := range lister.Info() {
		if info.Config.Name != self {
			out[info.Config.Name] = info.Config.Subjects
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	return out, nil
}

func wantedSubjects(spec StreamSpec, others map[string][]string, log zerolog.Logger) []string {
	var want []string
	for i, subj := range spec.Subjects {
		if owner := overlapping(subj, others); owner != "" {
			if i < len(spec.Fallback) && spec.Fallback[i] != "" {
				log.Warn().Str("subject", subj).Str("other_stream", owner).Str("fallback", spec.Fallback[i]).
					Msg("subject overlaps another stream, using the narrower subject")
				subj = spec.Fallback[i]
				if owner = overlapping(subj, others); owner == "" {
					want = append(want, subj)
					continue
				}
			}
			log.Warn().Str("subject", subj).Str("other_stream", owner).
				Msg("subject already covered by another stream, not adding it")
			continue
		}
		want = append(want, subj)
	}
	return want
}

func overlapping(subj string, others map[string][]string) string {
	names := make([]string, 0, len(others))
	for n := range others {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for _, s := range others[n] {
			if envelope.Overlap(subj, s) {
				return n
			}
		}
	}
	return ""
}

// mergeSubjects adds want to have: a wanted subject already covered by one of
// have is not added; subjects of have that a wanted wildcard covers are
// replaced by it (JetStream refuses overlapping subjects within one stream).
func mergeSubjects(have, want []string) ([]string, bool) {
	out := slices.Clone(have)
	changed := false
	for _, w := range want {
		if slices.ContainsFunc(out, func(h string) bool { return envelope.Covers(h, w) }) {
			continue
		}
		out = slices.DeleteFunc(out, func(h string) bool { return envelope.Covers(w, h) })
		out = append(out, w)
		changed = true
	}
	return out, changed
}

func covered(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return envelope.Covers(h, w) }) {
			return false
		}
	}
	return true
}

// noteRetention says, once per provisioning, when the existing stream's
// retention is not the one STREAM_RETENTION would create: it is kept (the
// server cannot change it), and on a work queue what is consumed is gone.
func noteRetention(cfg jetstream.StreamConfig, spec StreamSpec, log zerolog.Logger) {
	if cfg.Retention == spec.Retention {
		return
	}
	ev := log.Info()
	if cfg.Retention == jetstream.WorkQueuePolicy {
		ev = ev.Str("not_possible", "a message is removed once any consumer acknowledges it: audits cannot see "+
			"consumed events, a new durable cannot replay history, and a second durable on an overlapping filter is refused")
	}
	ev.Str("stream", spec.Name).Str("retention", cfg.Retention.String()).Str("stream_retention", spec.Retention.String()).
		Msg("stream exists with another retention; kept as it is (JetStream cannot change it)")
}

// narrowSubjects returns the stream's subjects with spec.Wide's subjects
// replaced when spec.Narrow is set, and whether any was. Without Narrow
// each wide subject found is reported (when report is set) with the fix.
func narrowSubjects(cfg jetstream.StreamConfig, spec StreamSpec, report bool, log zerolog.Logger) ([]string, bool) {
	out := slices.Clone(cfg.Subjects)
	changed := false
	for i, s := range out {
		narrow, ok := spec.Wide[s]
		if !ok {
			continue
		}
		if !spec.Narrow {
			if report {
				log.Warn().Str("stream", spec.Name).Str("subject", s).Str("narrower", narrow).
					Msg("the stream subject also covers push deliver subjects under it (such as the Ruby gem's " +
						"{dest}.sync.{app}.worker), and JetStream refuses those push consumers (deliver subject forms a cycle); " +
						"run `relay provision --narrow-subjects` to replace it by the narrower subject " +
						"(stored messages stay; publishing to subjects more than one token below .sync. then fails)")
			}
			continue
		}
		out[i], changed = narrow, true
		log.Info().Str("stream", spec.Name).Str("subject", s).Str("narrower", narrow).Msg("narrowing stream subject")
	}
	if changed {
		out = slices.Compact(out)
	}
	return out, changed
}
