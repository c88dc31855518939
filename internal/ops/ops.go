// Package ops serves the operational HTTP endpoints of a bridge process:
// /healthz (the process is alive), /readyz (every dependency is ready) and
// /metrics (Prometheus).
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Check reports nil when a dependency is ready, or why it is not.
type Check func(ctx context.Context) error

// Server is the HTTP endpoint. Checks are registered before Run.
type Server struct {
	Addr     string
	Registry *prometheus.Registry
	Checks   map[string]Check
	// Info adds fields to /readyz's JSON, such as db_host, the database
	// server in use; a function returning "" leaves its field out.
	Info map[string]func() string
	Log  zerolog.Logger
	// Pprof adds net/http/pprof's /debug/pprof/ endpoints (PPROF=true).
	Pprof bool
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// NewBuildInfo returns the gauge name, always 1, labelled with the build's
// version, VCS revision and Go version: a query can join it to any other
// series of the process to tell which build produced them.
func NewBuildInfo(name, version, revision, goVersion string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name,
		Help:        "Always 1; the labels name the build: module version, VCS revision, Go version.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion}})
	g.Set(1)
	return g
}

// Handler returns the endpoints' handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", s.ready)
	if s.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer(), promhttp.HandlerOpts{}))
	}
	if s.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	names := make([]string, 0, len(s.Checks))
	for n := range s.Checks {
		names = append(names, n)
	}
	sort.Strings(names)
	checks := map[string]string{}
	ok := true
	for _, n := range names {
		if err := s.Checks[n](ctx); err != nil {
			checks[n] = err.Error()
			ok = false
		} else {
			checks[n] = "ok"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	status := "ready"
	if !ok {
		status = "unready"
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	body := map[string]any{"status": status, "checks": checks}
	for k, f := range s.Info {
		if v := f(); v != "" {
			body[k] = v
		}
	}
	json.NewEncoder(w).Encode(body)
}

// Run serves until ctx ends. An empty Addr disables the server.
func (s *Server) Run(ctx context.Context) error {
	if s.Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.Log.Info().Str("addr", ln.Addr().String()).Msg("http listening")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}
