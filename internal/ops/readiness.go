package ops

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// readiness exports the /readyz checks as jetstream_bridge_ready{check}, so
// that alerts see what a readiness probe sees without probing each process.
// The checks run at scrape time: a gauge set elsewhere could be stale exactly
// when the process is stuck.
type readiness struct {
	checks map[string]Check
	desc   *prometheus.Desc
}

func newReadiness(checks map[string]Check) *readiness {
	return &readiness{checks: checks, desc: prometheus.NewDesc("jetstream_bridge_ready",
		"1 when the /readyz check named by the label passes, 0 when it fails.", []string{"check"}, nil)}
}

func (r *readiness) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r *readiness) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for name, check := range r.checks {
		v := 1.0
		if check(ctx) != nil {
			v = 0
		}
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.GaugeValue, v, name)
	}
}

// gatherer adds the readiness gauge to the server's registry.
func (s *Server) gatherer() prometheus.Gatherer {
	own := prometheus.NewRegistry()
	own.MustRegister(newReadiness(s.Checks))
	return prometheus.Gatherers{s.Registry, own}
}
