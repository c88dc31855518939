package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetstream-bridge/jetstream-bridge/internal/cdc"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
	"github.com/jetstream-bridge/jetstream-bridge/internal/relay"
)

// metrics is the relay's Prometheus side: relay.Observer for what the
// relay reports, gauge functions for what it is asked.
type metrics struct {
	slot                                        string
	published, duplicates, retries, deadLetters prometheus.Counter
	slotLag, slotRetained                       prometheus.Gauge
	latency                                     prometheus.Histogram
	walStatus                                   *prometheus.GaugeVec
	recoveries                                  *prometheus.CounterVec
	recoveredRows                               prometheus.Counter
	fenceWait                                   prometheus.Histogram
	fenceDropped                                prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, slot string) *metrics {
	m := &metrics{slot: slot,
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_relay_events_published_total",
			Help: "Events acknowledged by JetStream."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_relay_duplicates_total",
			Help: "Publishes JetStream reported as duplicates of a stored message (re-sends after restarts)."}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_relay_publish_retries_total",
			Help: "Publish attempts repeated after a failure."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_relay_dead_letters_total",
			Help: "Outbox rows dead-lettered because they cannot be published as asked."}),
		slotLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_slot_lag_bytes",
			Help: "WAL bytes between the server's current position and the slot's confirmed position."}),
		slotRetained: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_slot_retained_wal_bytes",
			Help: "WAL bytes the slot keeps on disk."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetstream_bridge_relay_commit_to_ack_seconds",
			Help:    "Time from the Postgres commit to the JetStream acknowledgement.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		// The slot label lets alerts group the active and the standby of one
		// slot, which the unlabelled gauges above cannot.
		walStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_slot_wal_status",
			Help:        "1 for the slot's current wal_status in pg_replication_slots (reserved, extended, unreserved, lost), 0 for the others.",
			ConstLabels: prometheus.Labels{"slot": slot}}, []string{"status"}),
	}
	m.recoveries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetstream_bridge_relay_slot_recoveries_total",
		Help:        "Times the relay recreated its missing or lost replication slot and republished outbox rows (SLOT_RECOVERY=auto), by reason (missing, dropped, lost).",
		ConstLabels: prometheus.Labels{"slot": slot}}, []string{"reason"})
	m.recoveredRows = prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_relay_slot_recovery_rows_total",
		Help:        "Outbox rows republished by slot recoveries.",
		ConstLabels: prometheus.Labels{"slot": slot}})
	m.fenceWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetstream_bridge_relay_fence_wait_seconds",
		Help:    "Time one sync fence took: until the synchronous standbys held every commit decoded before it (SYNC_STANDBY_FENCE).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	m.fenceDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_relay_fence_dropped_total",
		Help: "Events held at the sync fence when it lost its server and not found in the outbox of the server reached afterwards (transactions a failover erased): not published."})
	for _, s := range walStatuses {
		m.walStatus.WithLabelValues(s)
	}
	for _, r := range []string{"missing", "dropped", "lost"} {
		m.recoveries.WithLabelValues(r)
	}
	return m
}

// register registers the metrics, and those read from r, in reg.
func (m *metrics) register(reg *prometheus.Registry, r *relay.Relay) {
	slot := prometheus.Labels{"slot": m.slot}
	b := config.ReadBuild()
	reg.MustRegister(ops.NewBuildInfo("jetstream_bridge_relay_build_info", b.Version, b.Revision, b.GoVersion),
		m.published, m.duplicates, m.retries, m.deadLetters, m.slotLag, m.slotRetained, m.latency, m.walStatus,
		m.recoveries, m.recoveredRows, m.fenceWait, m.fenceDropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_fence_held",
			Help: "Events decoded and held at the sync fence until the synchronous standbys hold their commits."},
			func() float64 { n, _ := r.FenceHeld(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_fence_oldest_seconds",
			Help: "How long the oldest event held at the sync fence has waited; 0 when none is held."},
			func() float64 { _, d := r.FenceHeld(); return d.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_fence_active",
			Help: "1 while events wait for the synchronous standbys (SYNC_STANDBY_FENCE on, or auto with synchronous_standby_names set), 0 otherwise."},
			func() float64 { return boolGauge(r.FenceActive()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_slot_active", ConstLabels: slot,
			Help: "1 while this relay streams its slot (the active relay), 0 otherwise; sum by slot is the number of active relays."},
			func() float64 { return boolGauge(r.State().Replicating) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_standby", ConstLabels: slot,
			Help: "1 while this relay waits as hot standby because another relay holds its slot, 0 otherwise."},
			func() float64 { return boolGauge(r.State().Standby) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_inflight",
			Help: "Publishes awaiting a JetStream acknowledgement."}, func() float64 { return float64(r.Inflight()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "jetstream_bridge_relay_read_lingers_total",
			Help: "Reads that waited BATCH_LINGER to take a burst of transactions at once (read coalescing under load)."},
			func() float64 { return float64(r.Lingers()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "jetstream_bridge_relay_fast_batched_total",
			Help: "Messages published as part of a JetStream fast batch (FAST_BATCH) rather than acked one by one."},
			func() float64 { return float64(r.Batched()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_confirmed_lsn",
			Help: "Last WAL position confirmed to Postgres, as a number."}, func() float64 { return float64(r.State().Confirmed) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jetstream_bridge_relay_replicating",
			Help: "1 while this relay holds the slot and streams, 0 otherwise (standby, reconnecting)."}, func() float64 {
			if r.State().Replicating {
				return 1
			}
			return 0
		}),
	)
}

func (m *metrics) Published(duplicate bool) {
	m.published.Inc()
	if duplicate {
		m.duplicates.Inc()
	}
}

func (m *metrics) CommitToAck(d time.Duration) { m.latency.Observe(d.Seconds()) }
func (m *metrics) DeadLettered()               { m.deadLetters.Inc() }
func (m *metrics) FenceWait(d time.Duration)   { m.fenceWait.Observe(d.Seconds()) }
func (m *metrics) FenceDropped()               { m.fenceDropped.Inc() }
func (m *metrics) Retried()                    { m.retries.Inc() }

func (m *metrics) Slot(info *cdc.SlotInfo) {
	m.slotLag.Set(float64(info.LagBytes))
	m.slotRetained.Set(float64(info.RetainedBytes))
	m.setWALStatus(info.WALStatus)
}

func (m *metrics) SlotRecovered(reason string, rows int64) {
	m.recoveries.WithLabelValues(reason).Inc()
	m.recoveredRows.Add(float64(rows))
}

// walStatuses are the wal_status values of pg_replication_slots.
var walStatuses = []string{"reserved", "extended", "unreserved", "lost"}

// setWALStatus marks status as the slot's current one.
func (m *metrics) setWALStatus(status string) {
	m.fenceWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetstream_bridge_relay_fence_wait_seconds",
		Help:    "Time one sync fence took: until the synchronous standbys held every commit decoded before it (SYNC_STANDBY_FENCE).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	m.fenceDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_relay_fence_dropped_total",
		Help: "Events held at the sync fence when it lost its server and not found in the outbox of the server reached afterwards (transactions a failover erased): not published."})
	for _, s := range walStatuses {
		m.walStatus.WithLabelValues(s).Set(boolGauge(s == status))
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
