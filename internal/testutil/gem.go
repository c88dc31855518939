package testutil

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The fixtures below reproduce what the Ruby jetstream_bridge gem (v7.1.x)
// does to JetStream and to its database, so that mixed fleets are tested
// without Ruby. Each names the gem code it follows.

// GemSubjects are the subjects the gem provisions for app publishing to
// dest (Topology.provision!): its publish subject {app}.sync.{dest}, the
// subject it consumes {dest}.sync.{app}, and its DLQ {app}.sync.dlq.
func GemSubjects(app, dest string) []string {
	return []string{app + ".sync." + dest, dest + ".sync." + app, app + ".sync.dlq"}
}

// GemStreamConfig is the stream as the gem creates it when it provisions
// first (Stream.ensure_create): work-queue retention, file storage, its
// subjects, everything else the server's default.
func GemStreamConfig(name, app, dest string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: GemSubjects(app, dest),
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}
}

// GemEnsureStream does what the gem's Stream.ensure! does to an existing or
// missing stream: create it as GemStreamConfig; on an existing stream whose
// retention is not workqueue, change nothing (it only logs "retention
// mismatch ... skipping retention change", and adds none of its subjects);
// otherwise add the subjects no existing subject covers. It returns whether
// it changed or created the stream. (The gem's overlap guard against other
// streams is left out: tests share one stream.)
func GemEnsureStream(ctx context.Context, js jetstream.JetStream, name, app, dest string) (bool, error) {
	want := GemSubjects(app, dest)
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err := js.CreateStream(ctx, GemStreamConfig(name, app, dest))
		return err == nil, err
	}
	if err != nil {
		return false, err
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy {
		return false, nil
	}
	var add []string
	for _, w := range want {
		if !slices.ContainsFunc(cfg.Subjects, func(h string) bool { return gemMatch(h, w) }) {
			add = append(add, w)
		}
	}
	if len(add) == 0 {
		return false, nil
	}
	// The gem updates with name, subjects and the existing retention only.
	cfg.Subjects = append(cfg.Subjects, add...)
	_, err = js.UpdateStream(ctx, cfg)
	return err == nil, err
}

// gemMatch is the gem's SubjectMatcher.match?: does pattern cover subject.
func gemMatch(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i := range p {
		switch {
		case p[i] == ">":
			return i < len(s)
		case i >= len(s):
			return false
		case p[i] != "*" && p[i] != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// GemConsumerMode is the gem's consumer_mode.
type GemConsumerMode string

const (
	GemPull GemConsumerMode = "pull"
	GemPush GemConsumerMode = "push"
)

// GemDeliverSubject is the gem's default push deliver subject for app
// consuming from dest: its destination subject plus ".worker"
// (Config#push_delivery_subject).
func GemDeliverSubject(app, dest string) string { return dest + ".sync." + app + ".worker" }

// GemConsumerConfig is the durable consumer the gem creates for app
// consuming from dest with its defaults (SubscriptionManager
// build_consumer_config): durable {app}-workers, filter {dest}.sync.{app},
// explicit ack, deliver all, max_deliver 5, ack_wait 30s, backoff
// 1s,5s,15s,30s,60s; in push mode also deliver subject
// {dest}.sync.{app}.worker and deliver group {app}-workers.
func GemConsumerConfig(mode GemConsumerMode, app, dest string) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:       app + "-workers",
		FilterSubject: dest + ".sync." + app,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    5,
		AckWait:       30 * time.Second,
		BackOff:       []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second},
	}
	if mode == GemPush {
		c.DeliverSubject, c.DeliverGroup = GemDeliverSubject(app, dest), app+"-workers"
	}
	return c
}

// GemCreateConsumer creates the gem's consumer on stream as its
// create_consumer! does (only when missing; an existing one is left as
// it is).
func GemCreateConsumer(ctx context.Context, js jetstream.JetStream, stream string, mode GemConsumerMode, app, dest string) (*jetstream.ConsumerInfo, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("gem: stream %s does not exist: %w", stream, err)
	}
	cfg := GemConsumerConfig(mode, app, dest)
	if mode == GemPush {
		c, err := s.CreatePushConsumer(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return c.CachedInfo(), nil
	}
	c, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return c.CachedInfo(), nil
}

// GemInboxDDL creates the gem's inbox table, jetstream_bridge_inbox_events,
// as its Rails migration template (create_jetstream_inbox_events.rb.erb)
// does on PostgreSQL: t.string is character varying, t.text text, t.jsonb
// jsonb, t.datetime timestamp(6) without time zone, t.timestamps two NOT
// NULL columns without a default (Rails fills them), and an id bigserial.
const GemInboxDDL = `
CREATE TABLE public.jetstream_bridge_inbox_events (
    id                  bigserial PRIMARY KEY,
    event_id            character varying NOT NULL,
    event_type          character varying NOT NULL,
    resource_type       character varying,
    resource_id         character varying,
    payload             text NOT NULL,
    subject             character varying,
    headers             jsonb DEFAULT '{}',
    stream              character varying,
    stream_seq          bigint,
    deliveries          integer,
    status              character varying NOT NULL DEFAULT 'received',
    error_message       text,
    processing_attempts integer NOT NULL DEFAULT 0,
    received_at         timestamp(6) without time zone,
    processed_at        timestamp(6) without time zone,
    failed_at           timestamp(6) without time zone,
    created_at          timestamp(6) without time zone NOT NULL,
    updated_at          timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX index_jetstream_bridge_inbox_events_on_event_id ON public.jetstream_bridge_inbox_events (event_id);
CREATE INDEX index_jetstream_bridge_inbox_events_on_status ON public.jetstream_bridge_inbox_events (status);
CREATE INDEX index_jetstream_bridge_inbox_events_on_created_at ON public.jetstream_bridge_inbox_events (created_at);
CREATE UNIQUE INDEX index_jetstream_bridge_inbox_events_on_stream_and_stream_seq
    ON public.jetstream_bridge_inbox_events (stream, stream_seq)
    WHERE stream IS NOT NULL AND stream_seq IS NOT NULL;
`

// GemOutboxDDL creates the gem's outbox table, jetstream_bridge_outbox_events,
// as its migration template (create_jetstream_outbox_events.rb.erb) does:
// the gem's publisher stores the whole envelope as payload and the subject
// it publishes to, and tracks its own publishing in status, attempts,
// last_error, enqueued_at and sent_at.
const GemOutboxDDL = `
CREATE TABLE public.jetstream_bridge_outbox_events (
    id          bigserial PRIMARY KEY,
    event_id    character varying NOT NULL,
    subject     character varying NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}',
    headers     jsonb NOT NULL DEFAULT '{}',
    status      character varying NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    enqueued_at timestamp(6) without time zone,
    sent_at     timestamp(6) without time zone,
    created_at  timestamp(6) without time zone NOT NULL,
    updated_at  timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX index_jetstream_bridge_outbox_events_on_event_id ON public.jetstream_bridge_outbox_events (event_id);
CREATE INDEX index_jetstream_bridge_outbox_events_on_status ON public.jetstream_bridge_outbox_events (status);
`
