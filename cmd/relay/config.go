package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
	"github.com/jetstream-bridge/jetstream-bridge/internal/tracing"
	"github.com/jetstream-bridge/jetstream-bridge/migrations"
)

// Config is the relay's environment.
type Config struct {
	config.Common
	OutboxTable      string        `env:"OUTBOX_TABLE" envDefault:"public.jetstream_outbox_events" help:"outbox table (schema.table)"`
	ReplicationSlot  string        `env:"REPLICATION_SLOT" help:"logical replication slot (default jetstream_bridge_{app}); cluster-wide name"`
	Publication      string        `env:"PUBLICATION" envDefault:"jetstream_bridge_outbox" help:"publication on the outbox table"`
	DuplicateWindow  time.Duration `env:"DUPLICATE_WINDOW" envDefault:"2m" help:"JetStream dedupe window by Nats-Msg-Id"`
	MaxInflight      int           `env:"MAX_INFLIGHT" envDefault:"4096" help:"unacknowledged publishes at most"`
	MaxInflightBytes int           `env:"MAX_INFLIGHT_BYTES" envDefault:"33554432" help:"bytes of unacknowledged publishes at most; keep it under the server's ingest queue per stream (max_buffered_size, 128 MiB by default) divided by the publishers on the stream"`
	BatchLinger      time.Duration `env:"BATCH_LINGER" envDefault:"1ms" help:"under load (thousands of small transactions a second), wait this long for more WAL before reading, so bursts are published and acked together; 0 = never wait"`
	FastBatch        bool          `env:"FAST_BATCH" envDefault:"true" help:"publish bursts as JetStream fast batches (one ack per few hundred messages) when the stream allows it (allow_batched, nats-server 2.14+; AUTO_PROVISION turns it on)"`
	OutboxRetention  time.Duration `env:"OUTBOX_RETENTION" envDefault:"0" help:"delete outbox rows older than this (0 keeps them)"`
	PruneInterval    time.Duration `env:"OUTBOX_PRUNE_INTERVAL" envDefault:"1m" help:"how often OUTBOX_RETENTION pruning runs"`
	NoStreamTimeout  time.Duration `env:"NO_STREAM_TIMEOUT" envDefault:"30s" help:"with AUTO_PROVISION=false, a row whose subject has been answered 'no responders' this long, while the stream answers on the DLQ subject, is dead-lettered (no stream covers it)"`
	StreamReplicas   int           `env:"STREAM_REPLICAS" envDefault:"1" help:"replicas when creating the stream (3 in a cluster)"`
	StatusInterval   time.Duration `env:"STATUS_INTERVAL" envDefault:"1s" help:"how often the acked position is confirmed to Postgres"`
	ReplTimeout      time.Duration `env:"REPLICATION_TIMEOUT" envDefault:"30s" help:"a replication connection silent this long is dropped and reopened"`
	ShutdownTimeout  time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s" help:"on SIGTERM, how long to wait for in-flight acks"`
	SlotCheck        time.Duration `env:"SLOT_CHECK_INTERVAL" envDefault:"30s" help:"how often the slot's wal_status and lag are checked"`
	SlotLagWarn      int64         `env:"SLOT_LAG_WARN_BYTES" envDefault:"1073741824" help:"warn when the slot retains more WAL than this"`
	SlotRecovery     string        `env:"SLOT_RECOVERY" envDefault:"auto" help:"auto: when the replication slot is missing although it existed (a promoted standby, a dropped slot) or lost (max_slot_wal_keep_size), recreate it and republish the outbox rows the stream may lack; manual: stop with advice"`
	RecoveryMargin   time.Duration `env:"SLOT_RECOVERY_MARGIN" envDefault:"5m" help:"slot recovery republishes rows from this long before the stream's newest event (transactions that began earlier but committed later); longer than your longest outbox transaction"`
	SyncStandbyFence string        `env:"SYNC_STANDBY_FENCE" envDefault:"auto" help:"auto: while synchronous_standby_names is set on the server, publish an event only once the synchronous standbys hold its commit, so a failover never leaves published events whose transaction it erased (Postgres 16 and older decode commits before the standbys confirm them); on: always; off: publish once decoded"`
	PayloadArrays    string        `env:"PAYLOAD_ARRAYS" envDefault:"allow" help:"allow: publish array payloads as they are; deadletter: dead-letter rows whose payload is a JSON array (consumers on the Ruby gem receive arrays as {})"`
	Tracing          tracing.Env
	Partitions       int `env:"PARTITIONS" envDefault:"0" help:"publish to {subject}.{partition}, partition = FNV-1a 32 of the ordering key (resource_type, resource_id, or the row's Ordering-Key header) mod PARTITIONS; sinks must use the same value; 0 = off (subjects as the gem has them)"`
}

// Subjects returns the subject builder.
func (c *Config) Subjects() envelope.Subjects {
	return envelope.Subjects{Env: c.EnvName, App: c.AppName, Dest: c.DestinationApp}
}

// Slot is the replication slot name.
func (c *Config) Slot() string {
	if c.ReplicationSlot != "" {
		return c.ReplicationSlot
	}
	return DefaultSlot(c.AppName)
}

// DefaultSlot derives a slot name from the app name: lowercased, characters
// other than a-z 0-9 _ replaced by _.
func DefaultSlot(app string) string {
	b := []byte("jetstream_bridge_" + strings.ToLower(app))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

// Validate checks every variable before anything connects.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate(), c.Tracing.Validate()}
	s := c.Subjects()
	if err := s.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DestinationApp == "" {
		errs = append(errs, errors.New("DESTINATION_APP is required: the default publish subject is {app}.sync.{dest}"))
	}
	if _, err := migrations.QuoteQualified(c.OutboxTable); err != nil {
		errs = append(errs, fmt.Errorf("OUTBOX_TABLE: %w (expected schema.table)", err))
	}
	if err := migrations.ValidIdent(c.Slot()); err != nil {
		errs = append(errs, fmt.Errorf("REPLICATION_SLOT: %w", err))
	}
	if err := migrations.ValidIdent(c.Publication); err != nil {
		errs = append(errs, fmt.Errorf("PUBLICATION: %w", err))
	}
	if c.DuplicateWindow < time.Second {
		errs = append(errs, fmt.Errorf("DUPLICATE_WINDOW=%s: must be at least 1s (e.g. 2m)", c.DuplicateWindow))
	}
	if c.MaxInflight < 1 || c.MaxInflight > 100000 {
		errs = append(errs, fmt.Errorf("MAX_INFLIGHT=%d: expected a whole number from 1 to 100000", c.MaxInflight))
	}
	if c.MaxInflightBytes < 64<<10 || c.MaxInflightBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("MAX_INFLIGHT_BYTES=%d: expected 65536 to 1073741824 (default 32 MiB)", c.MaxInflightBytes))
	}
	if c.BatchLinger < 0 || c.BatchLinger > 50*time.Millisecond {
		errs = append(errs, fmt.Errorf("BATCH_LINGER=%s: expected 0 to 50ms (e.g. 1ms; a bare number is seconds)", c.BatchLinger))
	}
	if err := envelope.ValidatePartitions(c.Partitions); err != nil {
		errs = append(errs, err)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		errs = append(errs, fmt.Errorf("STREAM_REPLICAS=%d: expected 1 to 5", c.StreamReplicas))
	}
	if c.StatusInterval < 10*time.Millisecond || c.StatusInterval > 30*time.Second {
		errs = append(errs, fmt.Errorf("STATUS_INTERVAL=%s: expected 10ms to 30s", c.StatusInterval))
	}
	if c.OutboxRetention > 0 && c.PruneInterval < time.Second {
		errs = append(errs, fmt.Errorf("OUTBOX_PRUNE_INTERVAL=%s: must be at least 1s", c.PruneInterval))
	}
	if c.NoStreamTimeout < time.Second {
		errs = append(errs, fmt.Errorf("NO_STREAM_TIMEOUT=%s: must be at least 1s (e.g. 30s)", c.NoStreamTimeout))
	}
	if c.ReplTimeout < time.Second {
		errs = append(errs, fmt.Errorf("REPLICATION_TIMEOUT=%s: must be at least 1s", c.ReplTimeout))
	}
	if c.SlotCheck < time.Second {
		errs = append(errs, fmt.Errorf("SLOT_CHECK_INTERVAL=%s: must be at least 1s", c.SlotCheck))
	}
	if c.SlotRecovery != "auto" && c.SlotRecovery != "manual" {
		errs = append(errs, fmt.Errorf("SLOT_RECOVERY=%q: expected auto or manual", c.SlotRecovery))
	}
	if _, err := relay.ParseFenceMode(c.SyncStandbyFence); err != nil {
		errs = append(errs, err)
	}
	if c.RecoveryMargin <= 0 {
		errs = append(errs, fmt.Errorf("SLOT_RECOVERY_MARGIN=%s: must be positive (e.g. 5m)", c.RecoveryMargin))
	}
	if c.PayloadArrays != "allow" && c.PayloadArrays != "deadletter" {
		errs = append(errs, fmt.Errorf("PAYLOAD_ARRAYS=%q: expected allow or deadletter", c.PayloadArrays))
	}
	return errors.Join(errs...)
}

// ObjectPayloadsOnly reports PAYLOAD_ARRAYS=deadletter.
func (c *Config) ObjectPayloadsOnly() bool { return c.PayloadArrays == "deadletter" }

// Names are the schema object names for migrations.
func (c *Config) Names() migrations.Names {
	return migrations.Names{Outbox: c.OutboxTable, Publication: c.Publication}
}
