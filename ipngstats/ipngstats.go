// Package ipngstats is the front door of the ipng-stats library: one value,
// built from the agent's configuration (its bindings, metrics, attribution
// and bpf sections), that gives a Go HTTP server the per (source_tag, vip,
// code) accounting of ipng-stats:
//
//	acct, err := ipngstats.Load("/etc/ipng-stats/ipng-stats.yml")
//	go http.ListenAndServe(":9114", acct.MetricsHandler()) // the counts
//	acct.ListenAndServe(srv) // attributed at accept, one outcome per request
//
// or, step by step, acct.Listen (the listener wrapper) and acct.Instrument
// (the handler instrumentation).
//
// New follows the network namespace's links over netlink (device names in
// bindings.devices are resolved and re-resolved as links come and go),
// attributes each connection with the socket stamps of a running ipng-stats
// agent when its pinned maps (bpf.pin_dir) can be opened, and with
// IP_PKTINFO otherwise (attribution.mode picks; auto tries both), and counts
// into a collector served by MetricsHandler in the agent's format.
//
// It owns only this assembly. The parts are the packages it wires:
// bindings, attribution, collector, httpstats and exporter; use them
// directly for anything the front door does not offer.
package ipngstats

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/httpstats"
	"github.com/ipng/ipng-stats/loader"
)

// Accounting is the assembled accounting of one server process. Its
// methods are safe for concurrent use; Close releases it.
type Accounting struct {
	cfg    *config.Config
	log    *slog.Logger
	tags   *bindings.Resolver
	maps   *loader.Maps // nil without a running agent's pins
	attr   *attribution.Attributor
	coll   *collector.Collector
	stats  *httpstats.Stats
	exp    *exporter.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Option changes how New assembles the accounting.
type Option func(*options)

type options struct {
	logger *slog.Logger
}

// WithLogger sends the parts' logs (link changes, the attribution method
// in use, warnings) to l instead of slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Load reads the configuration file at path (the agent's format, see
// docs/config-guide.md; config.Load's checks and messages) and calls New.
func Load(path string, opts ...Option) (*Accounting, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return New(cfg, opts...)
}

// Parse decodes a YAML configuration (config.Parse; name is used in error
// messages) and calls New. An empty document is the defaults: every
// connection gets bindings.default_tag.
func Parse(data []byte, name string, opts ...Option) (*Accounting, error) {
	cfg, err := config.Parse(data, name)
	if err != nil {
		return nil, err
	}
	return New(cfg, opts...)
}

// New assembles the accounting from cfg (nil means config.Default()). It
// uses cfg's bindings (devices and default tag, followed over netlink in
// the process's network namespace and rescanned every
// bindings.rescan_interval; run a server for another namespace inside it,
// e.g. with nsenter or ip netns exec), metrics (series cap, buckets, native
// histograms), attribution.mode and bpf.pin_dir; the other sections are
// the agent's and are ignored.
//
// With attribution.mode auto (the default) a running agent's pinned maps
// are used when they can be opened and IP_PKTINFO otherwise; bpf requires
// the pins, fallback never opens them. When the pins are used, the agent
// exports ipng_connections_* for the connections its program stamped (it
// counts them in the kernel); this value's MetricsHandler has the requests
// and everything else.
func New(cfg *config.Config, opts ...Option) (*Accounting, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if cfg == nil {
		cfg = config.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	spec, err := cfg.BindingsSpec()
	if err != nil {
		return nil, err
	}
	mode, err := attribution.ParseMode(cfg.Attribution.Mode)
	if err != nil {
		return nil, err
	}
	a := &Accounting{cfg: cfg, log: o.logger.With("component", "ipngstats")}
	a.tags = bindings.NewResolver(spec, o.logger)
	// The first scan runs here, in the caller's namespace, so that New
	// returns with the devices resolved; Run then follows changes.
	if err := a.tags.Scan(); err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	aopts := attribution.Options{Mode: mode, Bindings: a.tags, Logger: o.logger}
	if mode != attribution.ModeFallback {
		maps, err := loader.OpenPinned(cfg.BPF.PinDir)
		if err != nil && mode == attribution.ModeBPF {
			return nil, fmt.Errorf("opening the agent's maps: %w", err)
		}
		a.maps, aopts.Maps, aopts.BPFError = maps, maps, err
	}
	if a.attr, err = attribution.New(aopts); err != nil {
		a.closeMaps()
		return nil, err
	}
	a.coll, err = collector.New(collector.Config{
		MaxSeries:           cfg.Metrics.MaxSeries,
		DurationBuckets:     cfg.Metrics.DurationBuckets,
		RequestSizeBuckets:  cfg.Metrics.SizeBuckets,
		ResponseSizeBuckets: cfg.Metrics.SizeBuckets,
		NativeHistograms:    cfg.Metrics.NativeHistograms,
	}, collector.Options{Logger: o.logger})
	if err != nil {
		a.closeMaps()
		return nil, err
	}
	a.coll.SetSources(collector.Sources{
		AttributionFallbacks: a.attr.Fallbacks,
		IfindexMisses: func() map[string]uint64 {
			v4, v6 := a.tags.Misses()
			return map[string]uint64{"ipv4": v4, "ipv6": v6}
		},
	})
	if a.exp, err = exporter.New(exporter.Options{Collector: a.coll, Logger: o.logger}); err != nil {
		a.closeMaps()
		return nil, err
	}
	a.stats = httpstats.New(httpstats.Options{Collector: a.coll, DefaultTag: spec.DefaultTag,
		ConnectionsCountedElsewhere: a.attr.UsesBPF()})

	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := a.tags.Run(ctx, cfg.Bindings.RescanInterval); err != nil {
			a.log.Error("following links stopped; bindings keep their last state", "err", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		a.coll.Run(ctx)
	}()
	return a, nil
}

// Listen opens a plain TCP listener (wildcard addresses listen on both
// families; never bound to a device, never MPTCP) whose connections are
// attributed at accept and counted. Serve it with a server passed to
// Instrument.
func (a *Accounting) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	return a.stats.Listen(ctx, network, address, a.attr)
}

// Listener wraps an existing plain TCP listener (not MPTCP; see
// attribution.NewListener) like Listen does.
func (a *Accounting) Listener(l net.Listener) (net.Listener, error) {
	al, err := attribution.NewListener(l, a.attr)
	if err != nil {
		return nil, err
	}
	return a.stats.Listener(al), nil
}

// Instrument sets srv's ConnContext and ConnState (calling those already
// set) and wraps its Handler, so each request on a listener from Listen is
// recorded once its response is flushed (httpstats.Stats.Instrument).
func (a *Accounting) Instrument(srv *http.Server) { a.stats.Instrument(srv) }

// ListenAndServe listens on srv.Addr (":http" when empty) with Listen,
// instruments srv and serves it, like srv.ListenAndServe. It returns
// http.ErrServerClosed after srv.Shutdown or srv.Close.
func (a *Accounting) ListenAndServe(srv *http.Server) error {
	ln, err := a.listenFor(srv, ":http")
	if err != nil {
		return err
	}
	return srv.Serve(ln)
}

// ListenAndServeTLS is ListenAndServe with TLS (srv.ServeTLS; HTTP/2 is
// counted too); srv.Addr defaults to ":https".
func (a *Accounting) ListenAndServeTLS(srv *http.Server, certFile, keyFile string) error {
	ln, err := a.listenFor(srv, ":https")
	if err != nil {
		return err
	}
	return srv.ServeTLS(ln, certFile, keyFile)
}

func (a *Accounting) listenFor(srv *http.Server, def string) (net.Listener, error) {
	addr := srv.Addr
	if addr == "" {
		addr = def
	}
	ln, err := a.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	a.Instrument(srv)
	return ln, nil
}

// MetricsHandler serves the counts as the agent does: Prometheus formats on
// /metrics (negotiated, compressed, ?source_tag= filters), the JSON
// document on /.well-known/ipng/statsz (or ?format=json), a landing page
// on /. Serve it on its own listener, not on one from Listen, or scrapes
// are counted as requests.
func (a *Accounting) MetricsHandler() http.Handler { return a.exp.Handler() }

// Collector is the collector the counts go into (snapshots, extra
// Prometheus registration).
func (a *Accounting) Collector() *collector.Collector { return a.coll }

// Attributor is the attributor of Listen's connections.
func (a *Accounting) Attributor() *attribution.Attributor { return a.attr }

// Close stops following links and closes the agent's maps. Listeners from
// Listen stay open (close them, or the server, first); connections they
// accept after Close are still attributed, by IP_PKTINFO or the default
// tag. Close is idempotent.
func (a *Accounting) Close() error {
	var err error
	a.once.Do(func() {
		a.cancel()
		a.wg.Wait()
		err = a.closeMaps()
	})
	return err
}

func (a *Accounting) closeMaps() error {
	if a.maps == nil {
		return nil
	}
	return a.maps.Close()
}
