package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Config is the sink's environment.
type Config struct {
	config.Common
	InboxTable      string          `env:"INBOX_TABLE" envDefault:"public.jetstream_inbox_events" help:"inbox table (schema.table); its positions table is <table>_positions"`
	DurableName     string          `env:"DURABLE_NAME" help:"durable consumer name (default {app}-workers)"`
	FilterSubject   string          `env:"FILTER_SUBJECT" help:"subject to consume (default [{env}.]{dest}.sync.{app}); * and > allowed"`
	Handler         string          `env:"HANDLER" help:"sql:schema.procedure_or_function, or an http:// or https:// webhook URL (or use ROUTES_FILE)"`
	RoutesFile      string          `env:"ROUTES_FILE" help:"JSON or YAML list of {event_type, resource_type, subject, handler}; first match wins (or use HANDLER)"`
	MaxDeliver      int             `env:"MAX_DELIVER" envDefault:"5" help:"handler attempts before an event is dead-lettered as exhausted"`
	AckWait         time.Duration   `env:"ACK_WAIT" envDefault:"30s" help:"consumer ack wait; held messages get a heartbeat every third of it"`
	Backoff         []time.Duration `env:"BACKOFF" envDefault:"1s,5s,15s,30s,60s" envSeparator:"," help:"waits between attempts, comma-separated; the last repeats"`
	BatchSize       int             `env:"BATCH_SIZE" envDefault:"25" help:"messages per fetch; at most 2*BATCH_SIZE+CONCURRENCY*TX_BATCH are held (and MAX_HELD_BYTES of them)"`
	MaxHeldBytes    int             `env:"MAX_HELD_BYTES" envDefault:"33554432" help:"bytes (bodies and headers) of fetched, unsettled messages at most, next to the count BATCH_SIZE bounds; a larger message is taken alone (pull mode; push mode is bounded by the consumer's max ack pending)"`
	TxBatch         int             `env:"TX_BATCH" envDefault:"25" help:"events of different keys a worker may apply in one transaction when the handler is SQL (1 = one transaction per event)"`
	Concurrency     int             `env:"CONCURRENCY" envDefault:"4" help:"events applied in parallel (different keys); database pool is CONCURRENCY+2"`
	SkipStale       bool            `env:"SKIP_STALE" envDefault:"false" help:"skip (record as stale) an event older than the newest applied for its key"`
	FillGaps        string          `env:"FILL_GAPS" envDefault:"auto" help:"auto, on or off: read a delivery lost on the way from the stream and apply it before the later events of its key; only right when this process is the consumer's one reader (auto: on with PARTITIONS)"`
	ConsumerMode    string          `env:"CONSUMER_MODE" envDefault:"pull" help:"pull, or push: a durable push consumer delivering to DELIVER_SUBJECT in queue group DURABLE_NAME"`
	DeliverSubject  string          `env:"DELIVER_SUBJECT" help:"push mode: the consumer's deliver subject (default [{env}.]_bridge.{durable})"`
	WebhookSecret   string          `env:"WEBHOOK_SECRET" help:"sign webhooks (Standard Webhooks); whsec_<base64> or raw bytes"`
	WebhookTimeout  time.Duration   `env:"WEBHOOK_TIMEOUT" envDefault:"10s" help:"timeout of one webhook call"`
	ShutdownTimeout time.Duration   `env:"SHUTDOWN_TIMEOUT" envDefault:"30s" help:"on SIGTERM, how long in-flight handlers may finish"`
	StreamReplicas  int             `env:"STREAM_REPLICAS" envDefault:"1" help:"replicas when creating the stream (3 in a cluster)"`
	Tracing         tracing.Env
	Partitions      int           `env:"PARTITIONS" envDefault:"0" help:"consume {filter}.{partition} through one consumer per partition ({durable}-p{N}), each owned by one sink process at a time; must equal the relay's PARTITIONS; 0 = off"`
	PartitionLease  time.Duration `env:"PARTITION_LEASE" envDefault:"6s" help:"with PARTITIONS: a sink process silent this long is gone; its partitions move after this plus ACK_WAIT"`

	routes []sink.Route // ROUTES_FILE, read by Validate
	// forRun makes Validate require and check HANDLER or ROUTES_FILE: only
	// `sink run` applies events; provision, status and dlq never call a handler.
	forRun bool
}

// Subjects returns the subject builder.
func (c *Config) Subjects() envelope.Subjects {
	return envelope.Subjects{Env: c.EnvName, App: c.AppName, Dest: c.DestinationApp}
}

// Durable is the consumer name.
func (c *Config) Durable() string {
	if c.DurableName != "" {
		return c.DurableName
	}
	return c.AppName + "-workers"
}

// Filter is the subject consumed.
func (c *Config) Filter() string {
	if c.FilterSubject != "" {
		return c.FilterSubject
	}
	return c.Subjects().Filter()
}

// Gaps reports whether lost deliveries are read from the stream (FILL_GAPS):
// auto is on with PARTITIONS, where each consumer has one reader.
func (c *Config) Gaps() bool {
	switch c.FillGaps {
	case "on":
		return true
	case "auto":
		return c.Partitions > 0
	}
	return false
}

// Push reports CONSUMER_MODE=push.
func (c *Config) Push() bool { return c.ConsumerMode == "push" }

// Deliver is the push consumer's deliver subject.
func (c *Config) Deliver() string {
	if c.DeliverSubject != "" {
		return c.DeliverSubject
	}
	if c.EnvName != "" {
		return c.EnvName + "._bridge." + c.Durable()
	}
	return "_bridge." + c.Durable()
}

// DLQ is the dead-letter subject.
func (c *Config) DLQ() string { return c.Subjects().DLQ() }

// MaxHeld bounds the messages one process holds.
func (c *Config) MaxHeld() int { return sink.DefaultMaxHeld(c.BatchSize, c.Concurrency, c.TxBatch) }

// MaxAckPending is the consumer's limit of delivered, unacknowledged
// messages over all sink processes: four times 2*BATCH_SIZE+CONCURRENCY,
// and at least JetStream's usual 1000. In push mode it is the only bound
// (the server delivers up to it, to whichever processes of the queue group
// it picks, and no byte bound applies), so it does not grow with TX_BATCH
// as a pull process's MaxHeld does: a pull process bounds itself in bytes
// and shares this limit with the others.
func (c *Config) MaxAckPending() int { return max(1000, 4*(2*c.BatchSize+c.Concurrency)) }

// Validate checks every variable before anything connects. It reads
// ROUTES_FILE.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate(), c.Tracing.Validate()}
	s := c.Subjects()
	if err := s.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DestinationApp == "" && c.FilterSubject == "" {
		errs = append(errs, errors.New("DESTINATION_APP is required unless FILTER_SUBJECT is set: the default filter is {dest}.sync.{app}"))
	}
	if c.FilterSubject != "" {
		if err := envelope.ValidateFilterSubject(c.FilterSubject); err != nil {
			errs = append(errs, fmt.Errorf("FILTER_SUBJECT: %w (e.g. billing.sync.orders or billing.sync.>)", err))
		} else if c.AppName != "" && envelope.Overlap(c.FilterSubject, c.DLQ()) {
			errs = append(errs, fmt.Errorf("FILTER_SUBJECT %q covers the dead-letter subject %s: the sink would consume its own dead letters", c.FilterSubject, c.DLQ()))
		}
	}
	if _, err := migrations.QuoteQualified(c.InboxTable); err != nil {
		errs = append(errs, fmt.Errorf("INBOX_TABLE: %w (expected schema.table)", err))
	} else if _, err := migrations.QuoteQualified(c.InboxTable + "_positions"); err != nil {
		errs = append(errs, fmt.Errorf("INBOX_TABLE: %q is too long for its positions table name (63 bytes at most)", c.InboxTable))
	}
	if d := c.Durable(); d == "" || strings.ContainsAny(d, " \t\r\n.*>/\\") || len(d) > 255 {
		errs = append(errs, fmt.Errorf("DURABLE_NAME %q: expected a name without whitespace, '.', '*', '>', '/' or '\\'", d))
	}
	switch {
	case !c.forRun:
	case c.Handler == "" && c.RoutesFile == "":
		errs = append(errs, errors.New("HANDLER or ROUTES_FILE is required: HANDLER=sql:schema.name or HANDLER=https://host/path"))
	case c.Handler != "" && c.RoutesFile != "":
		errs = append(errs, errors.New("HANDLER and ROUTES_FILE are both set: set exactly one"))
	case c.Handler != "":
		if _, _, err := sink.ParseHandlerSpec(c.Handler); err != nil {
			errs = append(errs, fmt.Errorf("HANDLER=%w", err))
		}
	default:
		routes, err := sink.LoadRoutes(c.RoutesFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("ROUTES_FILE: %w", err))
		}
		c.routes = routes
	}
	if c.MaxDeliver < 1 || c.MaxDeliver > 1000 {
		errs = append(errs, fmt.Errorf("MAX_DELIVER=%d: expected a whole number from 1 to 1000", c.MaxDeliver))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("ACK_WAIT=%s: must be at least 1s (e.g. 30s)", c.AckWait))
	}
	if len(c.Backoff) == 0 {
		errs = append(errs, errors.New("BACKOFF: expected comma-separated durations such as 1s,5s,15s"))
	}
	for _, b := range c.Backoff {
		if b <= 0 {
			errs = append(errs, fmt.Errorf("BACKOFF: %s is not positive; expected comma-separated durations such as 1s,5s,15s", b))
			break
		}
	}
	if c.TxBatch < 1 || c.TxBatch > 1000 {
		errs = append(errs, fmt.Errorf("TX_BATCH=%d: expected a whole number from 1 to 1000", c.TxBatch))
	}
	if c.BatchSize < 1 || c.BatchSize > 1000 {
		errs = append(errs, fmt.Errorf("BATCH_SIZE=%d: expected a whole number from 1 to 1000", c.BatchSize))
	}
	if c.MaxHeldBytes < 64<<10 || c.MaxHeldBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("MAX_HELD_BYTES=%d: expected 65536 to 1073741824 (default 32 MiB)", c.MaxHeldBytes))
	}
	if c.Concurrency < 1 || c.Concurrency > 256 {
		errs = append(errs, fmt.Errorf("CONCURRENCY=%d: expected a whole number from 1 to 256", c.Concurrency))
	}
	switch c.FillGaps {
	case "auto", "on", "off":
		if c.FillGaps == "on" && c.ConsumerMode == "push" {
			errs = append(errs, errors.New("FILL_GAPS=on needs CONSUMER_MODE=pull: a push consumer's queue group shares its deliveries"))
		}
	default:
		errs = append(errs, fmt.Errorf("FILL_GAPS=%q: expected auto, on or off", c.FillGaps))
	}
	switch c.ConsumerMode {
	case "pull":
		if c.DeliverSubject != "" {
			errs = append(errs, errors.New("DELIVER_SUBJECT is set but CONSUMER_MODE is pull: set CONSUMER_MODE=push or unset DELIVER_SUBJECT"))
		}
	case "push":
		if err := envelope.ValidatePublishSubject(c.Deliver()); err != nil {
			errs = append(errs, fmt.Errorf("DELIVER_SUBJECT=%q: %w (e.g. _bridge.orders-workers)", c.Deliver(), err))
		} else if c.AppName != "" && (envelope.Overlap(c.Deliver(), c.Filter()) || envelope.Overlap(c.Deliver(), c.DLQ())) {
			errs = append(errs, fmt.Errorf("DELIVER_SUBJECT %q overlaps the stream's subjects (%s, %s): JetStream refuses a delivery cycle", c.Deliver(), c.Filter(), c.DLQ()))
		}
	default:
		errs = append(errs, fmt.Errorf("CONSUMER_MODE=%q: expected pull or push", c.ConsumerMode))
	}
	if _, err := sink.DecodeWebhookSecret(c.WebhookSecret); err != nil {
		errs = append(errs, fmt.Errorf("WEBHOOK_SECRET: %w", err)) // never echoes the secret
	}
	if c.WebhookTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WEBHOOK_TIMEOUT=%s: must be positive (e.g. 10s)", c.WebhookTimeout))
	}
	if err := envelope.ValidatePartitions(c.Partitions); err != nil {
		errs = append(errs, err)
	}
	if c.Partitions > 0 {
		if c.ConsumerMode != "pull" {
			errs = append(errs, errors.New("PARTITIONS needs CONSUMER_MODE=pull: each partition's owner pulls its own consumer"))
		}
		if c.FilterSubject != "" && strings.ContainsAny(c.FilterSubject, "*>") {
			errs = append(errs, fmt.Errorf("FILTER_SUBJECT %q: with PARTITIONS it must be a plain subject; partition N is consumed on {filter}.N", c.FilterSubject))
		}
		if c.PartitionLease < 2*time.Second || c.PartitionLease > 5*time.Minute {
			errs = append(errs, fmt.Errorf("PARTITION_LEASE=%s: expected 2s to 5m (e.g. 6s)", c.PartitionLease))
		}
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		errs = append(errs, fmt.Errorf("STREAM_REPLICAS=%d: expected 1 to 5", c.StreamReplicas))
	}
	return errors.Join(errs...)
}

// Names are the schema object names for migrations.
func (c *Config) Names() migrations.Names { return migrations.Names{Inbox: c.InboxTable} }
