package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/loader"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the node agent: load and attach the sock_ops program, follow interface bindings, export metrics",
		Description: "Without --config the agent runs on the embedded default configuration (no device bindings: " +
			"every connection is tagged \"direct\"). SIGHUP reloads the configuration file (bindings, log level); " +
			"SIGTERM or SIGINT stops the agent, detaching the program unless bpf.keep_on_exit is set.",
		Flags:  concat(configFlags(), webFlags(), bpfFlags()),
		Action: runAgent,
	}
}

func runAgent(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	logger, err := newLogger(c.App.ErrWriter, cfg.Log.Level, cfg.Log.Format, level)
	if err != nil {
		return err
	}
	logger.Info("starting ipng-stats agent", "version", versionString(), "config", configName(c))

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	spec, err := cfg.BindingsSpec()
	if err != nil {
		return err
	}
	tags := bindings.NewResolver(spec, logger)
	if err := tags.Scan(); err != nil {
		return fmt.Errorf("resolving bound devices: %w", err)
	}

	mode, err := attribution.ParseMode(cfg.Attribution.Mode)
	if err != nil {
		return err
	}
	var (
		prog   *loader.Program
		bpfErr error
	)
	if mode != attribution.ModeFallback {
		prog, bpfErr = loader.Load(loaderConfig(cfg), logger)
		if bpfErr != nil && mode == attribution.ModeBPF {
			return bpfErr
		}
		if prog != nil {
			defer prog.Close()
		}
	}
	var maps *loader.Maps
	if prog != nil {
		maps = prog.Maps()
	}
	attr, err := attribution.New(attribution.Options{Mode: mode, Maps: maps, BPFError: bpfErr, Bindings: tags, Logger: logger})
	if err != nil {
		return err
	}
	_ = attr // served to in-process servers (proxy) and the exporter's meta series

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := tags.Run(ctx, cfg.Bindings.RescanInterval); err != nil && !errors.Is(err, context.Canceled) {
			logger.Error("bindings watcher stopped", "err", err)
		}
	}()
	if prog != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := prog.ReadEvents(ctx, func(ev loader.Event) {
				r := tags.Table().Lookup(ev.Stamp.Ifindex, ev.Stamp.Family)
				logger.Debug("connection", "open", ev.Open, "local", ev.Stamp.Local, "remote", ev.Stamp.Remote,
					"ifindex", ev.Stamp.Ifindex, "device", r.Device, "tag", r.Tag)
			})
			if err != nil {
				logger.Error("event reader stopped", "err", err)
			}
		}()
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	logger.Info("agent running", "bindings", len(spec.Bindings), "default_tag", spec.DefaultTag, "bpf", prog != nil)
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping agent")
			return nil
		case <-hup:
			reload(c, logger, level, tags)
		}
	}
}

// reload re-reads the configuration file and applies what can change at run
// time: bindings and log level. A bad file is logged and ignored, the agent
// keeps running on the previous configuration.
func reload(c *cli.Context, logger *slog.Logger, level *slog.LevelVar, tags *bindings.Resolver) {
	cfg, err := loadConfig(c)
	if err != nil {
		logger.Error("reload failed, keeping the running configuration", "err", err)
		return
	}
	spec, err := cfg.BindingsSpec()
	if err != nil {
		logger.Error("reload failed, keeping the running configuration", "err", err)
		return
	}
	if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		logger.Error("reload: bad log level", "err", err)
	}
	tags.SetSpec(spec)
	if err := tags.Scan(); err != nil {
		logger.Warn("reload: rescanning links", "err", err)
	}
	logger.Info("configuration reloaded", "bindings", len(spec.Bindings), "default_tag", spec.DefaultTag)
}

func loaderConfig(cfg *config.Config) loader.Config {
	return loader.Config{
		Cgroup:           cfg.BPF.Cgroup,
		PinDir:           cfg.BPF.PinDir,
		KeepOnExit:       cfg.BPF.KeepOnExit,
		CookieMapEntries: cfg.BPF.CookieMapEntries,
		TupleMapEntries:  cfg.BPF.TupleMapEntries,
	}
}

func configName(c *cli.Context) string {
	if p := c.String(flagConfig); p != "" {
		return p
	}
	return "(embedded default)"
}
