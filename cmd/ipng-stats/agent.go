package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/connstats"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/handshake"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/nginxlog"
	"github.com/ipng/ipng-stats/proxy"
	"github.com/ipng/ipng-stats/status"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the node agent: load and attach the sock_ops program, follow interface bindings, export metrics",
		Description: "Without --config the agent runs on the embedded default configuration (no device bindings: " +
			"every connection is tagged \"direct\"). Metrics are served on web.listen_address (:9113) at " +
			"/.well-known/ipng/statsz and /metrics. SIGHUP reloads the configuration file (bindings, log level, " +
			"metrics.max_series); SIGTERM or SIGINT stops the agent, detaching the program unless " +
			"bpf.keep_on_exit is set.",
		Flags:  concat(configFlags(), webFlags(), bpfFlags()),
		Action: runAgent,
	}
}

// agent is what runAgent wires together.
type agent struct {
	cfg    *config.Config
	logger *slog.Logger
	level  *slog.LevelVar
	tags   *bindings.Resolver
	prog   *loader.Program // nil without BPF
	attr   *attribution.Attributor
	col    *collector.Collector
	conns  *connstats.Tracker // nil without BPF
	tagIDs *loader.TagTable   // nil without BPF
	hs     atomic.Pointer[handshake.Monitor]
	ready  atomic.Bool
}

func runAgent(c *cli.Context) error {
	// SIGHUP is caught from the start: its default action would kill an
	// agent that is reloaded while it starts.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	a := &agent{cfg: cfg, level: new(slog.LevelVar)}
	if a.logger, err = newLogger(c.App.ErrWriter, cfg.Log.Level, cfg.Log.Format, a.level); err != nil {
		return err
	}
	a.logger.Info("starting ipng-stats agent", "version", versionString(), "config", configName(c))
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	err = a.setup()
	if a.prog != nil {
		defer a.prog.Close()
	}
	if err != nil {
		return err
	}
	reg := a.registry()
	srv, err := exporter.New(exporter.Options{
		ListenAddress: cfg.Web.ListenAddress, WebConfigFile: cfg.Web.ConfigFile,
		Collector: a.col, Registry: reg, Logger: a.logger, Version: version,
		Health: liveHealth("agent", cfg.Attribution.Mode, a.attr, a.tags, reg),
		Ready: func() error {
			if !a.ready.Load() {
				return errors.New("starting")
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	if err := status.Mount(srv, a.logger); err != nil {
		return err
	}

	// Deferred after prog.Close, so the parts stop before the program is
	// closed.
	p := newParts(ctx)
	defer p.stop()
	p.run("exporter", srv.Run)
	p.run("collector", a.col.Run)
	p.run("bindings", func(ctx context.Context) error { return a.tags.Run(ctx, cfg.Bindings.RescanInterval) })
	var maps *loader.Maps
	var tagNames func(uint32) (string, bool)
	if a.prog != nil {
		maps, tagNames = a.prog.Maps(), a.tagIDs.Name
	}
	ingest, err := startNginx(cfg, a.col, a.tags, maps, tagNames, reg, a.logger, p.run)
	if err != nil {
		return err
	}
	var cgroup string
	if a.prog != nil {
		cgroup = a.prog.Cgroup()
	}
	hs, reloadHandshakes := startHandshakes(cfg, cgroup, a.col, a.tags, maps, tagNames, reg, a.logger, p.run)
	a.hs.Store(hs)
	reloadProxy, err := startProxy(cfg, proxy.Deps{Attributor: a.attr, Collector: a.col, Logger: a.logger,
		ConnectionsCountedElsewhere: a.conns != nil}, reg, p.run)
	if err != nil {
		return err
	}

	a.ready.Store(true)
	a.logger.Info("agent running", "listen", cfg.Web.ListenAddress, "bindings", len(cfg.Bindings.Devices),
		"default_tag", cfg.Bindings.DefaultTag, "bpf", a.prog != nil)
	for {
		select {
		case <-p.done():
			if err := p.err(); err != nil {
				a.logger.Error("stopping agent", "err", err)
				return err
			}
			a.logger.Info("stopping agent")
			return nil
		case <-hup:
			if next := reloadConfig(c, a.tags, a.level, a.col, a.logger); next != nil {
				reloadProxy(next)
				reloadHandshakes(next)
				if next.Nginx.Enabled != cfg.Nginx.Enabled {
					a.logger.Warn("nginx.enabled changed by a reload: restart the agent to apply it")
				}
				if ingest != nil {
					if err := ingest.Reload(next.Nginx); err != nil {
						a.logger.Error("nginx ingest reload", "err", err)
					}
				}
			}
		}
	}
}

// setup builds the parts of the data path: bindings, the BPF program (by
// mode), attribution, the collector and the connection tracker.
func (a *agent) setup() error {
	cfg := a.cfg
	var err error
	if a.tags, err = newTags(cfg, a.logger); err != nil {
		return err
	}
	mode, err := attribution.ParseMode(cfg.Attribution.Mode)
	if err != nil {
		return err
	}
	var bpfErr error
	if mode != attribution.ModeFallback {
		a.prog, bpfErr = loader.Load(loaderConfig(cfg), a.logger)
		// Incompatible pins mean an old program is still attached and needs
		// the operator (ipng-stats detach): never run past them.
		if bpfErr != nil && (mode == attribution.ModeBPF || errors.Is(bpfErr, ebpf.ErrMapIncompatible)) {
			return bpfErr
		}
		// nginx is attributed by the program's 4-tuple stamps only: without
		// them every line would silently get the default tag.
		if bpfErr != nil && cfg.Nginx.Enabled {
			return fmt.Errorf("the nginx ingest needs the BPF program (nginx connections are attributed by its 4-tuple stamps): %w", bpfErr)
		}
	}
	var maps *loader.Maps
	if a.prog != nil {
		maps = a.prog.Maps()
	}
	if a.attr, err = attribution.New(attribution.Options{Mode: mode, Maps: maps, BPFError: bpfErr, Bindings: a.tags, Logger: a.logger}); err != nil {
		return err
	}
	a.col, err = newCollector(cfg, a.logger, collector.Options{
		RejectReasons:   nginxlog.RejectReasons(),
		FallbackReasons: nginxlog.FallbackReasons(),
	})
	if err != nil {
		return err
	}
	src := collector.Sources{
		IfindexMisses:        a.misses,
		AttributionFallbacks: a.attr.Fallbacks,
		BPFEvents:            a.bpfCounters,
	}
	if a.prog != nil {
		if a.tagIDs, err = loader.NewTagTable(maps); err != nil {
			return err
		}
		// The program stamps each connection with its interface's tag
		// at accept: it learns every new bindings table at once.
		a.tags.OnChange(func(t *bindings.Table) {
			if err := a.tagIDs.Sync(t); err != nil {
				a.logger.Warn("telling the program the interfaces' tags (connections on them get their tag when counted instead)", "err", err)
			}
		})
		a.conns = connstats.New(a.col, a.tags, a.tagIDs.Name, maps.ReadConns)
		src.Refresh = a.refreshConns
		a.refreshConns()
	}
	a.col.SetSources(src)
	return nil
}

// refreshConns adds the kernel's connection counts to the collector. It runs
// at every snapshot (scrape, JSON, status page): nothing else reads them.
func (a *agent) refreshConns() {
	if err := a.conns.Sync(); err != nil {
		a.logger.Warn("reading the program's connection counts", "err", err)
	}
	if hs := a.hs.Load(); hs != nil {
		if err := hs.Sync(); err != nil {
			a.logger.Warn("reading the handshake counts", "err", err)
		}
	}
}

func (a *agent) misses() map[string]uint64 {
	v4, v6 := a.tags.Misses()
	return map[string]uint64{"ipv4": v4, "ipv6": v6}
}

func (a *agent) bpfCounters() map[string]uint64 {
	if a.prog == nil {
		return nil
	}
	m, err := a.prog.Maps().ReadCounters()
	if err != nil {
		a.logger.Warn("reading BPF counters", "err", err)
		return nil
	}
	return m
}

func loaderConfig(cfg *config.Config) loader.Config {
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
	}
}

func collectorConfig(cfg *config.Config) collector.Config {
	m := cfg.Metrics
	return collector.Config{
		MaxSeries:           m.MaxSeries,
		DurationBuckets:     m.DurationBuckets,
		RequestSizeBuckets:  m.SizeBuckets,
		ResponseSizeBuckets: m.SizeBuckets,
		NativeHistograms:    m.NativeHistograms,
	}
}

// registry holds the agent's own series: Go runtime, process, and whether
// the sock_ops program is attached (in mode auto the agent runs on without
// it, and only this gauge tells).
func (a *agent) registry() *prometheus.Registry {
	reg := runtimeRegistry()
	attached := 0.0
	if a.prog != nil {
		attached = 1
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ipng_bpf_attached",
		Help: "1 when the sock_ops program is loaded and attached by this agent, 0 when it runs without it.",
	}, func() float64 { return attached }))
	return reg
}

// runtimeRegistry holds the process's Go runtime and process series.
func runtimeRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func configName(c *cli.Context) string {
	if p := c.String(flagConfig); p != "" {
		return p
	}
	return "(embedded default)"
}
