package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/handshake"
	"github.com/ipng/ipng-stats/loader"
)

// startHandshakes starts counting TCP handshake stages on the bound devices
// (package handshake) when cfg.Handshakes is enabled and the sock_ops
// program runs (maps non-nil), as a part run by goRun, registers its meta
// series in reg and returns the Monitor (whose Sync the collector's refresh
// calls) and what SIGHUP calls with the reloaded configuration. A kernel
// that cannot run the programs is logged, not fatal.
func startHandshakes(cfg *config.Config, cgroup string, col *collector.Collector, tags *bindings.Resolver, maps *loader.Maps,
	names func(uint32) (string, bool), reg *prometheus.Registry, logger *slog.Logger,
	goRun func(string, func(context.Context) error)) (*handshake.Monitor, func(*config.Config)) {
	noop := func(*config.Config) {}
	if !cfg.Handshakes.Enabled || maps == nil {
		return nil, noop
	}
	m, err := handshake.New(handshakeConfig(cfg), handshake.Options{
		Collector: col, Bindings: tags, Logger: logger, PinDir: cfg.BPF.PinDir, Cgroup: cgroup,
		DiagnoseEvery: cfg.Handshakes.DiagnoseInterval,
		Completed: func() (map[string]uint64, error) {
			conns, err := maps.ReadConns()
			return handshake.Completed(conns, names, tags.Table()), err
		},
	})
	if err != nil {
		logger.Warn("not counting TCP handshakes", "component", "handshake", "err", err)
		return nil, noop
	}
	if reg != nil {
		reg.MustRegister(m)
	}
	goRun("handshakes", func(ctx context.Context) error {
		defer m.Close()
		return m.Run(ctx)
	})
	return m, func(c *config.Config) { m.Reload(handshakeConfig(c)) }
}

func handshakeConfig(cfg *config.Config) handshake.Config {
	h := handshake.Config{PortsRescan: cfg.Handshakes.PortsRescanInterval}
	for _, p := range cfg.Handshakes.Ports {
		h.Ports = append(h.Ports, uint16(p))
	}
	return h
}
