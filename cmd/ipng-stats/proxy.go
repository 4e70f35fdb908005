package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/proxy"
	"github.com/ipng/ipng-stats/status"
)

func proxyCommand() *cli.Command {
	return &cli.Command{
		Name:  "proxy",
		Usage: "run only the built-in reverse proxy (the proxy: section) and its metrics endpoint",
		Description: "Runs the listeners and upstreams of the proxy: section (proxy.enabled is implied) and serves " +
			"their per (source_tag, vip, code) metrics on web.listen_address. It loads no BPF program: with " +
			"attribution.mode auto or bpf it reads the maps a running agent pinned in bpf.pin_dir (auto falls back " +
			"to IP_PKTINFO without them); fallback needs no privilege beyond binding the ports. SIGHUP reloads the configuration " +
			"(listeners that stay keep their sockets); SIGTERM or SIGINT drains in-flight requests for up to " +
			"proxy.drain_timeout.",
		Flags:  concat(configFlags(), webFlags(), []cli.Flag{stringFlag(flagPinDir, "bpffs `DIR` of a running agent's pinned maps (config bpf.pin_dir)"), stringFlag(flagMode, "attribution mode: auto, bpf or fallback (config attribution.mode)")}),
		Action: runProxy,
	}
}

func runProxy(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	if len(cfg.Proxy.Listeners) == 0 {
		return errors.New("the configuration has no proxy.listeners")
	}
	cfg.Proxy.Enabled = true
	if os.Getenv("GOGC") == "" {
		// The proxy's live heap is small and its garbage per request is not:
		// collecting less often buys a few percent of throughput.
		debug.SetGCPercent(400)
	}
	level := new(slog.LevelVar)
	logger, err := newLogger(c.App.ErrWriter, cfg.Log.Level, cfg.Log.Format, level)
	if err != nil {
		return err
	}
	logger.Info("starting ipng-stats proxy", "version", versionString(), "config", configName(c))
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	tags, err := newTags(cfg, logger)
	if err != nil {
		return err
	}
	mode, err := attribution.ParseMode(cfg.Attribution.Mode)
	if err != nil {
		return err
	}
	opts := attribution.Options{Mode: mode, Bindings: tags, Logger: logger}
	if mode != attribution.ModeFallback {
		maps, err := loader.OpenPinned(cfg.BPF.PinDir)
		if err != nil && mode == attribution.ModeBPF {
			return fmt.Errorf("opening the agent's maps: %w", err)
		}
		if maps != nil {
			defer maps.Close()
		}
		opts.Maps, opts.BPFError = maps, err
	}
	attr, err := attribution.New(opts)
	if err != nil {
		return err
	}
	col, err := newCollector(cfg, logger, collector.Options{})
	if err != nil {
		return err
	}
	col.SetSources(collector.Sources{AttributionFallbacks: attr.Fallbacks})

	p := newParts(ctx)
	defer p.stop()
	reg := runtimeRegistry()
	// Connections the agent's program stamped are counted by the agent.
	reloadProxy, err := startProxy(cfg, proxy.Deps{Attributor: attr, Collector: col, Logger: logger,
		ConnectionsCountedElsewhere: attr.UsesBPF()}, reg, p.run)
	if err != nil {
		return err
	}
	srv, err := exporter.New(exporter.Options{ListenAddress: cfg.Web.ListenAddress, WebConfigFile: cfg.Web.ConfigFile,
		Collector: col, Registry: reg, Logger: logger, Version: version,
		Health: liveHealth("proxy", cfg.Attribution.Mode, attr, tags, reg)})
	if err != nil {
		return err
	}
	if err := status.Mount(srv, logger); err != nil {
		return err
	}
	p.run("exporter", srv.Run)
	p.run("collector", col.Run)
	p.run("bindings", func(ctx context.Context) error { return tags.Run(ctx, cfg.Bindings.RescanInterval) })

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	logger.Info("proxy command running", "listen", cfg.Web.ListenAddress, "attribution", mode)
	for {
		select {
		case <-p.done():
			return p.err()
		case <-hup:
			if next := reloadConfig(c, tags, level, col, logger); next != nil {
				next.Proxy.Enabled = true
				reloadProxy(next)
			}
		}
	}
}
