package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/connstats"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/nginxlog"
)

// NewLogger builds the slog logger from log.level and log.format. The level
// lives in lvl so that a reload can change it.
func NewLogger(w io.Writer, level, format string, lvl *slog.LevelVar) (*slog.Logger, error) {
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "logfmt", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want logfmt or json", format)
}

// NewBindings builds the bindings resolver of cfg and resolves the bound
// devices in the current network namespace.
func NewBindings(cfg *config.Config, logger *slog.Logger) (*bindings.Resolver, error) {
	spec, err := cfg.BindingsSpec()
	if err != nil {
		return nil, err
	}
	tags := bindings.NewResolver(spec, logger)
	if err := tags.Scan(); err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	return tags, nil
}

// Check loads a configuration with load and refuses what a start would
// refuse: the bindings spec and the web config file (exporter-toolkit).
// A reload applies nothing of a refused file, so the next restart cannot
// fail on a file SIGHUP accepted.
func Check(load func() (*config.Config, error)) (*config.Config, bindings.Spec, error) {
	cfg, err := load()
	if err != nil {
		return nil, bindings.Spec{}, err
	}
	spec, err := cfg.BindingsSpec()
	if err != nil {
		return nil, bindings.Spec{}, err
	}
	if err := exporter.ValidateWebConfig(cfg.Web.ConfigFile); err != nil {
		return nil, bindings.Spec{}, err
	}
	return cfg, spec, nil
}

// LoaderConfig is the loader's configuration of cfg.
func LoaderConfig(cfg *config.Config) loader.Config {
	return loader.Config{
		Cgroup:           cfg.BPF.Cgroup,
		PinDir:           cfg.BPF.PinDir,
		KeepOnExit:       cfg.BPF.KeepOnExit,
		CookieMapEntries: cfg.BPF.CookieMapEntries,
		TupleMapEntries:  cfg.BPF.TupleMapEntries,
		// Only the nginx ingest reads the 4-tuple map: without it the
		// program does not write it (bpf.tuple_map_entries is set in the
		// default configuration, so it cannot be the switch).
		Tuples: cfg.Nginx.Enabled,
		// Socket storage only for the agent's own proxy with BPF
		// attribution (lookup by fd); other readers use the cookie map.
		SkStorage: cfg.Proxy.Enabled && cfg.Attribution.Mode != "fallback",
	}
}

// CollectorConfig is the collector's configuration of cfg.
func CollectorConfig(cfg *config.Config) collector.Config {
	m := cfg.Metrics
	return collector.Config{
		MaxSeries:           m.MaxSeries,
		DurationBuckets:     m.DurationBuckets,
		RequestSizeBuckets:  m.SizeBuckets,
		ResponseSizeBuckets: m.SizeBuckets,
		NativeHistograms:    m.NativeHistograms,
	}
}

// setup builds the data path: bindings, the BPF program or the agent's
// pins (by mode and role), attribution, the collector and, in the agent,
// the connection counts.
func (n *Node) setup(opts Options) error {
	cfg := n.Config
	var err error
	if n.Bindings, err = NewBindings(cfg, n.Logger); err != nil {
		return err
	}
	mode, err := attribution.ParseMode(cfg.Attribution.Mode)
	if err != nil {
		return err
	}
	if mode != attribution.ModeFallback {
		if n.Role == RoleProxy {
			err = n.openPins(mode)
		} else {
			err = n.loadProgram(mode)
		}
		if err != nil {
			return err
		}
	}
	if n.Attributor, err = attribution.New(attribution.Options{Mode: mode, Maps: n.Maps, BPFError: n.bpfErr,
		Bindings: n.Bindings, Logger: n.Logger}); err != nil {
		return err
	}
	copts := collector.Options{Logger: n.Logger, Build: opts.Build}
	if n.Role == RoleAgent {
		copts.RejectReasons, copts.FallbackReasons = nginxlog.RejectReasons(), nginxlog.FallbackReasons()
	}
	if n.Collector, err = collector.New(CollectorConfig(cfg), copts); err != nil {
		return err
	}
	n.Registry = prometheus.NewRegistry()
	n.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if n.Role == RoleProxy {
		n.Collector.SetSources(collector.Sources{AttributionFallbacks: n.Attributor.Fallbacks})
		return nil
	}
	n.Registry.MustRegister(attachedGauge(n.Program != nil))
	src := collector.Sources{
		IfindexMisses:        n.misses,
		AttributionFallbacks: n.Attributor.Fallbacks,
		BPFEvents:            n.bpfCounters,
	}
	if n.Program != nil {
		var conns func()
		if conns, n.tagNames, err = connstats.Start(n.Collector, n.Bindings, n.Maps, n.Logger); err != nil {
			return err
		}
		src.Refresh = func() { conns(); n.syncHandshakes() }
	}
	n.Collector.SetSources(src)
	return nil
}

// loadProgram loads and attaches the program (agent). In mode auto a load
// error leaves the node without it, except for what must not run past one.
func (n *Node) loadProgram(mode attribution.Mode) error {
	cfg := n.Config
	n.Program, n.bpfErr = loader.Load(LoaderConfig(cfg), n.Logger)
	if n.Program != nil {
		n.closers = append(n.closers, func() { n.Program.Close() })
		n.Maps = n.Program.Maps()
		return nil
	}
	// Incompatible pins mean an old program is still attached and needs
	// the operator (ipng-stats detach): never run past them.
	if mode == attribution.ModeBPF || errors.Is(n.bpfErr, ebpf.ErrMapIncompatible) {
		return n.bpfErr
	}
	// nginx is attributed by the program's 4-tuple stamps only: without
	// them every line would silently get the default tag.
	if cfg.Nginx.Enabled {
		return fmt.Errorf("the nginx ingest needs the BPF program (nginx connections are attributed by its 4-tuple stamps): %w", n.bpfErr)
	}
	return nil
}

// openPins opens the maps a running agent pinned (proxy); in mode auto the
// proxy runs on IP_PKTINFO without them.
func (n *Node) openPins(mode attribution.Mode) error {
	n.Maps, n.bpfErr = loader.OpenPinned(n.Config.BPF.PinDir)
	if n.bpfErr != nil && mode == attribution.ModeBPF {
		return fmt.Errorf("opening the agent's maps: %w", n.bpfErr)
	}
	if n.Maps != nil {
		n.closers = append(n.closers, func() { n.Maps.Close() })
	}
	return nil
}

// attachedGauge is ipng_bpf_attached: in mode auto the agent runs on
// without the program, and only this gauge tells.
func attachedGauge(attached bool) prometheus.Collector {
	v := 0.0
	if attached {
		v = 1
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ipng_bpf_attached",
		Help: "1 when the sock_ops program is loaded and attached by this agent, 0 when it runs without it.",
	}, func() float64 { return v })
}

func (n *Node) misses() map[string]uint64 {
	v4, v6 := n.Bindings.Misses()
	return map[string]uint64{"ipv4": v4, "ipv6": v6}
}

func (n *Node) bpfCounters() map[string]uint64 {
	if n.Program == nil {
		return nil
	}
	m, err := n.Maps.ReadCounters()
	if err != nil {
		n.Logger.Warn("reading BPF counters", "err", err)
		return nil
	}
	return m
}
