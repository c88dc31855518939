package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/provision"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

func (m *Main) provision(ctx context.Context, args []string) error {
	var printSQL bool
	if err := m.Flags("provision", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&printSQL, "print-sql", false, "print the SQL provisioning would run on the database (an existing inbox table's missing columns first) and change nothing")
	}); err != nil {
		return err
	}
	c, err := m.load(false)
	if err != nil {
		return err
	}
	if printSQL {
		sql, err := provision.SchemaSQL(ctx, c.DatabaseURL, provision.InboxTable, c.Names())
		if err != nil {
			return err
		}
		return provision.WriteSQL(m.Stdout, sql)
	}
	a, err := newApp(ctx, c, config.NewLogger(&c.Common, m.Stderr, "sink"))
	if err != nil {
		return err
	}
	defer a.Close()
	if c.Partitions > 0 {
		if err := a.provisionPartitions(ctx); err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "provisioned: inbox %s, partition tables, stream %s (subjects %s, %s), consumers %s..%s (filters %s..%s, pull)\n",
			c.InboxTable, c.StreamName, envelope.PartitionFilter(c.Filter()), c.DLQ(),
			sink.PartitionDurable(c.Durable(), 0), sink.PartitionDurable(c.Durable(), c.Partitions-1),
			envelope.PartitionSubject(c.Filter(), 0), envelope.PartitionSubject(c.Filter(), c.Partitions-1))
		return nil
	}
	info, err := a.provision(ctx)
	if err != nil {
		return err
	}
	mode := "pull"
	if c.Push() {
		mode = fmt.Sprintf("push to %s, queue group %s", info.Config.DeliverSubject, info.Config.DeliverGroup)
	}
	fmt.Fprintf(m.Stdout, "provisioned: inbox %s, stream %s (subjects %s, %s), consumer %s (filter %s, %s)\n",
		c.InboxTable, c.StreamName, c.Filter(), c.DLQ(), c.Durable(), c.Filter(), mode)
	return nil
}

// provision applies the inbox schema, makes the stream cover the filter and
// DLQ subjects (and with DESTINATION_APP the peer's, provision.PeerSubjects), and creates or updates the consumer (pull or push, as
// CONSUMER_MODE says; a consumer of the other kind is recreated).
func (a *App) provision(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c := a.cfg
	if err := provision.Inbox(ctx, c.DatabaseURL, c.Names()); err != nil {
		return nil, err
	}
	retention, _ := c.Retention() // validated at load
	if _, err := provision.EnsureStream(ctx, a.js, provision.StreamSpec{
		Name:      c.StreamName,
		Subjects:  append([]string{c.Filter(), c.DLQ()}, provision.PeerSubjects(c.Subjects())...),
		Replicas:  c.StreamReplicas,
		Retention: retention,
	}, a.log); err != nil {
		return nil, err
	}
	return provision.EnsureConsumer(ctx, a.js, c.consumerSpec(), a.log)
}

// consumerSpec is the consumer the configuration asks for.
func (c *Config) consumerSpec() provision.ConsumerSpec {
	spec := provision.ConsumerSpec{
		Stream:        c.StreamName,
		Durable:       c.Durable(),
		Filter:        c.Filter(),
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		Backoff:       c.Backoff,
		MaxAckPending: c.MaxAckPending(),
	}
	if c.Push() {
		spec.DeliverSubject, spec.DeliverIsDefault = c.Deliver(), c.DeliverSubject == ""
	}
	return spec
}
