package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetstream-bridge/jetstream-bridge/internal/envelope"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// benchPartitions is PARTITIONS in step 9.
const benchPartitions = 16

// partitioned is step 9: --sink-events relay-built envelopes (distinct keys)
// published with PARTITIONS=16 are applied through the no-op SQL procedure
// by 1, 2 and 4 sink processes sharing the partitions, each run on fresh
// partition consumers and an empty inbox. The rate counts from the first
// acknowledgement to the last over all partitions, so it includes the
// processes dividing the partitions among themselves at the start.
func (b *bench) partitioned(ctx context.Context) error {
	o := b.opts
	fmt.Fprintf(b.out, "step 9: %s events over %d partitions, 1, 2 and 4 sink processes (%d repetition(s)) ...\n",
		thousands(int64(o.SinkEvents)), benchPartitions, o.Reps)
	for range o.Reps {
		if err := b.resetStream(ctx, true); err != nil {
			return err
		}
		msgs, err := b.buildPartitioned(o.SinkEvents, benchPartitions)
		if err != nil {
			return err
		}
		if _, err := b.publishAsync(ctx, msgs); err != nil {
			return err
		}
		msgs = nil
		// The same events through one unpartitioned sink whose consumer
		// filters every partition's subject: what one process owning all
		// partitions is compared with.
		rate, err := b.partitionedRun(ctx, 1, 0)
		if err != nil {
			return err
		}
		b.report.add(9, "partitions_off_rate", "PARTITIONS unset, 1 sink process, one consumer on every partition: events applied", "ev/s", rate, "pg_1row_rate")
		for _, n := range []int{1, 2, 4} {
			rate, err := b.partitionedRun(ctx, n, benchPartitions)
			if err != nil {
				return err
			}
			id := fmt.Sprintf("partitions_p%d_rate", n)
			b.report.add(9, id, fmt.Sprintf("PARTITIONS=%d, %d sink process(es): events applied", benchPartitions, n), "ev/s", rate, "pg_1row_rate")
		}
	}
	return b.resetStream(ctx, false)
}

// partitionedRun applies the stream's events with processes sinks running
// PARTITIONS=partitions; with 0, one consumer filters every partition.
func (b *bench) partitionedRun(ctx context.Context, processes, partitions int) (float64, error) {
	o := b.opts
	if err := b.resetPartitions(ctx); err != nil {
		return 0, err
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.stop(30 * time.Second)
		}
	}()
	for i := range processes {
		env := append(b.sinkEnv("sql:bench.noop", 4), "PARTITIONS="+strconv.Itoa(partitions))
		if partitions == 0 {
			env = append(env, "FILTER_SUBJECT="+envelope.PartitionFilter(subject))
		}
		p, err := b.start(ctx, fmt.Sprintf("sink-p%d-%d", processes, i+1), b.sinkBin, env)
		if err != nil {
			return 0, err
		}
		procs = append(procs, p)
	}
	total := uint64(o.SinkEvents)
	var first, last time.Time
	var ackedAtFirst uint64
	timeout := max(2*time.Minute, time.Duration(o.SinkEvents/200)*time.Second)
	err := waitFor(ctx, timeout, 50*time.Millisecond, "partitioned sinks apply every event", func() (bool, error) {
		for _, p := range procs {
			if p.exited() {
				return false, fmt.Errorf("sink exited: %v\n%s", p.Err(), p.tail(20))
			}
		}
		durables := []string{durableName}
		if partitions > 0 {
			durables = durables[:0]
			for part := range partitions {
				durables = append(durables, sink.PartitionDurable(durableName, part))
			}
		}
		var acked, pending uint64
		for _, durable := range durables {
			c, err := b.js.Consumer(ctx, streamName, durable)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				return false, nil // not provisioned yet
			}
			if err != nil {
				return false, err
			}
			info := c.CachedInfo()
			acked += info.Delivered.Consumer - uint64(info.NumAckPending)
			pending += info.NumPending + uint64(info.NumAckPending)
		}
		now := time.Now()
		if acked > 0 && first.IsZero() {
			first, ackedAtFirst = now, acked
		}
		if pending == 0 && acked >= total {
			last = now
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return 0, err
	}
	var processed int64
	if err := b.dst.QueryRow(ctx, "SELECT count(*) FROM "+inboxTable+" WHERE status = 'processed'").Scan(&processed); err != nil {
		return 0, err
	}
	if processed != int64(total) {
		return 0, fmt.Errorf("inbox holds %d processed events, want %d", processed, total)
	}
	rate := float64(total-ackedAtFirst) / last.Sub(first).Seconds()
	if ackedAtFirst >= total || math.IsInf(rate, 0) || math.IsNaN(rate) {
		rate = 0
	}
	return rate, nil
}

// resetPartitions deletes the partition consumers and empties the inbox and
// the ownership tables, so that a run starts from the first message.
func (b *bench) resetPartitions(ctx context.Context) error {
	if err := b.resetSink(ctx); err != nil {
		return err
	}
	for part := range benchPartitions {
		if err := b.js.DeleteConsumer(ctx, streamName, sink.PartitionDurable(durableName, part)); err != nil &&
			!errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete partition consumer: %w", err)
		}
	}
	if _, err := b.dst.Exec(ctx, `DO $$ BEGIN
		IF to_regclass('public.jetstream_bridge_partitions') IS NOT NULL THEN
			TRUNCATE public.jetstream_bridge_partitions, public.jetstream_bridge_members;
		END IF; END $$`); err != nil {
		return fmt.Errorf("truncate partition tables: %w", err)
	}
	return nil
}
