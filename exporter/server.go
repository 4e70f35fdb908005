package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/ipng/ipng-stats/collector"
)

// DefaultListenAddress is where the exporter listens when
// Options.ListenAddress is empty.
const DefaultListenAddress = ":9113"

// Paths served. MetricsPath and StatszPath serve the same document.
const (
	MetricsPath = "/metrics"
	StatszPath  = "/.well-known/ipng/statsz"
	HealthyPath = "/-/healthy"
	ReadyPath   = "/-/ready"
)

// shutdownTimeout bounds the graceful shutdown in Run.
const shutdownTimeout = 5 * time.Second

// Options configure a Server.
type Options struct {
	// ListenAddress is host:port; empty means DefaultListenAddress.
	ListenAddress string
	// WebConfigFile is an exporter-toolkit web configuration file (TLS,
	// basic auth); empty serves plain HTTP without authentication. The
	// toolkit re-reads it on every connection, so editing it needs no reload.
	WebConfigFile string
	// Collector is the source of the ipng_* series. Required. Do not also
	// register it in Registry.
	Collector *collector.Collector
	// Registry holds extra collectors (Go runtime, process, ...), served
	// unfiltered next to the collector's series. Optional.
	Registry prometheus.Gatherer
	// Logger receives request errors and server events; nil discards.
	Logger *slog.Logger
	// Ready reports whether the agent is ready (/-/ready answers 503 with
	// the error otherwise). nil means always ready.
	Ready func() error
	// Version is shown on the landing page.
	Version string
	// MaxConnections bounds the connections held open at once (0:
	// DefaultMaxConnections). At the bound a new connection makes room by
	// closing the one idle longest (never sent a byte first), or is closed.
	MaxConnections int
	// ReadHeaderTimeout bounds the time a client takes to send a request's
	// headers (0: DefaultReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// WriteTimeout bounds the time from the end of a request's headers to
	// the end of its response (0: DefaultWriteTimeout): a client that reads
	// the body slower is cut off (ipng_exporter_rejected_total{reason=
	// "write_timeout"}).
	WriteTimeout time.Duration
	// Health reports the agent's state for the JSON document's meta.health
	// (and the status page). nil leaves meta.health out.
	Health func() Health
}

// Server is the exporter's HTTP server.
type Server struct {
	opts    Options
	log     *slog.Logger
	handler http.Handler
	mux     *http.ServeMux
	links   []web.LandingLinks
	landing http.Handler // rebuilt by Mount
	promAll http.Handler // the unfiltered Prometheus formats
	guard   *connGuard
	own     *prometheus.Registry // the exporter's own series (guard)
}

// New checks opts (including the web configuration file) and builds the
// handler. It does not listen; see Run.
func New(opts Options) (*Server, error) {
	if opts.Collector == nil {
		return nil, errors.New("exporter: a collector is required")
	}
	if opts.ListenAddress == "" {
		opts.ListenAddress = DefaultListenAddress
	}
	if _, _, err := net.SplitHostPort(opts.ListenAddress); err != nil && !strings.HasPrefix(opts.ListenAddress, "vsock://") {
		return nil, fmt.Errorf("exporter: listen address %q: %w", opts.ListenAddress, err)
	}
	if err := ValidateWebConfig(opts.WebConfigFile); err != nil {
		return nil, err
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	s := &Server{opts: opts, log: opts.Logger, guard: newConnGuard(opts.MaxConnections, opts.ReadHeaderTimeout, opts.WriteTimeout), own: prometheus.NewRegistry()}
	s.own.MustRegister(s.guard)
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.log = s.log.With("component", "exporter")
	if err := s.routes(); err != nil {
		return nil, err
	}
	return s, nil
}

// Document is the JSON document of the series matching f, with meta.health
// when Options.Health is set.
func (s *Server) Document(f collector.Filter) Document {
	var h *Health
	if s.opts.Health != nil {
		v := s.opts.Health()
		h = &v
	}
	return newDocument(s.opts.Collector.Snapshot(f), f, h)
}

// Mount serves h at path (GET and HEAD, and everything below path when it
// ends in "/") and links it from the landing page. It must be called before
// Run or Serve.
func (s *Server) Mount(path, text, description string, h http.Handler) error {
	s.links = append(s.links, web.LandingLinks{Address: path, Text: text, Description: description})
	if err := s.buildLanding(); err != nil {
		return err
	}
	s.mux.Handle("GET "+path, h)
	return nil
}

func (s *Server) buildLanding() error {
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "ipng-stats",
		Description: "Per-interface, per-VIP HTTP traffic accounting",
		Version:     s.opts.Version,
		Profiling:   "false",
		Links:       s.links,
	})
	if err != nil {
		return fmt.Errorf("exporter: landing page: %w", err)
	}
	s.landing = landing
	return nil
}

// Handler returns the exporter's routes without TLS or authentication (for
// tests with httptest, or to mount elsewhere).
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on Options.ListenAddress (through exporter-toolkit, so
// "vsock://:port" works too) and serves until ctx is done, then shuts down
// gracefully. It returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	return s.serve(ctx, func(srv *http.Server, flags *web.FlagConfig) error {
		return web.ListenAndServe(srv, flags, s.log)
	})
}

// Serve is Run on an existing listener (e.g. from systemd or a test), which
// it closes.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return s.serve(ctx, func(srv *http.Server, flags *web.FlagConfig) error {
		return web.Serve(ln, srv, flags, s.log)
	})
}

func (s *Server) serve(ctx context.Context, run func(*http.Server, *web.FlagConfig) error) error {
	srv := &http.Server{
		Handler:     s.handler,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.guard.install(srv)
	done := make(chan struct{})    // run returned
	stopped := make(chan struct{}) // the shutdown goroutine finished
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			s.log.Warn("graceful shutdown incomplete", "err", err)
			_ = srv.Close()
		}
	}()
	file := s.opts.WebConfigFile
	err := run(srv, &web.FlagConfig{
		WebListenAddresses: &[]string{s.opts.ListenAddress},
		WebSystemdSocket:   new(false),
		WebConfigFile:      &file,
	})
	// Serve returns as soon as Shutdown starts; wait for in-flight requests.
	close(done)
	<-stopped
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("exporter: serve: %w", err)
}

// routes builds the mux. GET patterns also answer HEAD; other methods get
// 405 from the mux.
func (s *Server) routes() error {
	s.links = []web.LandingLinks{
		{Address: MetricsPath, Text: "Metrics", Description: "Prometheus text, OpenMetrics or protobuf by Accept; ?format=json for JSON"},
		{Address: StatszPath, Text: "Statsz", Description: "the same document; filter with ?source_tag= and ?vip="},
		{Address: StatszPath + "?format=json", Text: "Statsz (JSON)", Description: "JSON, schema 1"},
		{Address: HealthyPath, Text: "Health"},
		{Address: ReadyPath, Text: "Readiness"},
	}
	if err := s.buildLanding(); err != nil {
		return err
	}
	s.promAll = s.promHandler(collector.Filter{})
	stats, err := compress(http.HandlerFunc(s.serveStats))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	s.mux, s.handler = mux, mux
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { s.landing.ServeHTTP(w, r) })
	mux.Handle("GET "+MetricsPath, stats)
	mux.Handle("GET "+StatszPath, stats)
	mux.HandleFunc("GET "+HealthyPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Healthy\n")
	})
	mux.HandleFunc("GET "+ReadyPath, func(w http.ResponseWriter, _ *http.Request) {
		if s.opts.Ready != nil {
			if err := s.opts.Ready(); err != nil {
				http.Error(w, "Not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Ready\n")
	})
	return nil
}

// ValidateWebConfig checks an exporter-toolkit web configuration file (TLS,
// basic auth) as New does; "" (plain HTTP) is valid. A reload calls it so
// that it accepts only what the next start accepts.
func ValidateWebConfig(file string) error {
	if file == "" {
		return nil
	}
	if err := web.Validate(file); err != nil {
		return fmt.Errorf("exporter: web config %s: %w", file, err)
	}
	return nil
}
