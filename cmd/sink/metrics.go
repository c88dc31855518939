package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetstream-bridge/jetstream-bridge/internal/config"
	"github.com/jetstream-bridge/jetstream-bridge/internal/ops"
	"github.com/jetstream-bridge/jetstream-bridge/internal/sink"
)

// metrics implements sink.Observer with Prometheus collectors.
type metrics struct {
	applied, duplicate, retried, dead, stale prometheus.Counter
	handler, lag, held                       prometheus.Histogram
	pending, ackPending, redelivered         prometheus.Gauge
	lostDeliveries, gapFilled                prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetstream_bridge_sink_events_total",
		Help: "Messages by outcome: applied, duplicate (already applied, acked without the handler), " +
			"retried (failed attempts retried), dead (dead-lettered), stale (older than the key's newest, SKIP_STALE)."},
		[]string{"result"})
	m := &metrics{
		applied:   events.WithLabelValues(string(sink.ResultApplied)),
		duplicate: events.WithLabelValues(string(sink.ResultDuplicate)),
		retried:   events.WithLabelValues(string(sink.ResultRetried)),
		dead:      events.WithLabelValues(string(sink.ResultDead)),
		stale:     events.WithLabelValues(string(sink.ResultStale)),
		handler: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetstream_bridge_sink_handler_seconds",
			Help:    "Time the handler took, per attempt, successful or not.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetstream_bridge_sink_lag_seconds",
			Help: "Time from an applied event's store in the stream to its ack after commit (the NATS server's clock against this host's: " +
				"skew between them shows here).",
			Buckets: lagBuckets}),
		held: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetstream_bridge_sink_held_seconds",
			Help: "Time from an applied event's arrival in this process to its ack after commit: waiting behind its key's earlier events " +
				"and for a worker, retries, the transaction.",
			Buckets: lagBuckets}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetstream_bridge_sink_consumer_pending",
			Help: "Messages in the stream not yet delivered to the consumer (from consumer info every 10s; AUTO_PROVISION=true only)."}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetstream_bridge_sink_consumer_ack_pending",
			Help: "Messages delivered to the consumer and not yet acknowledged (from consumer info every 10s; AUTO_PROVISION=true only)."}),
		redelivered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetstream_bridge_sink_consumer_redelivered",
			Help: "Unacknowledged messages that were delivered more than once (from consumer info every 10s; AUTO_PROVISION=true only)."}),
		lostDeliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_sink_lost_deliveries_total",
			Help: "Deliveries the consumer counted that never reached this process (gaps in its delivery sequence; FILL_GAPS)."}),
		gapFilled: prometheus.NewCounter(prometheus.CounterOpts{Name: "jetstream_bridge_sink_gap_filled_total",
			Help: "Messages read from the stream in place of lost deliveries and applied before the later events of their keys (FILL_GAPS)."}),
	}
	b := config.ReadBuild()
	reg.MustRegister(events, m.handler, m.lag, m.held, m.pending, m.ackPending, m.redelivered, m.lostDeliveries, m.gapFilled,
		ops.NewBuildInfo("jetstream_bridge_sink_build_info", b.Version, b.Revision, b.GoVersion))
	return m
}

// lagBuckets span a sink keeping up (a millisecond) to one catching up on
// a backlog (half an hour).
var lagBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800}

// Applied observes how long an applied event took to its ack, since it was
// stored in the stream (unknown when negative) and since it arrived.
func (m *metrics) Applied(sinceStored, sinceReceived time.Duration) {
	if sinceStored >= 0 {
		m.lag.Observe(sinceStored.Seconds())
	}
	m.held.Observe(sinceReceived.Seconds())
}

// Result counts a message outcome.
func (m *metrics) Result(r sink.Result) {
	switch r {
	case sink.ResultApplied:
		m.applied.Inc()
	case sink.ResultDuplicate:
		m.duplicate.Inc()
	case sink.ResultRetried:
		m.retried.Inc()
	case sink.ResultDead:
		m.dead.Inc()
	case sink.ResultStale:
		m.stale.Inc()
	}
}

// GapFilled counts lost deliveries and the messages read in their place.
func (m *metrics) GapFilled(lost, filled int) {
	m.lostDeliveries.Add(float64(lost))
	m.gapFilled.Add(float64(filled))
}

// HandlerDone observes a handler's latency.
func (m *metrics) HandlerDone(elapsed time.Duration, _ error) { m.handler.Observe(elapsed.Seconds()) }
