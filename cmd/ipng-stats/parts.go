package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/exporter"
)

// parts runs the long-lived parts of a command (exporter, watchers,
// servers), each until the context is done. The first part that fails
// stops the others, and its error becomes the command's.
type parts struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
}

func newParts(ctx context.Context) *parts {
	p := &parts{}
	p.ctx, p.cancel = context.WithCancelCause(ctx)
	return p
}

// run starts fn as the part called name.
func (p *parts) run(name string, fn func(context.Context) error) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := fn(p.ctx); err != nil && !errors.Is(err, context.Canceled) {
			p.cancel(fmt.Errorf("%s: %w", name, err))
		}
	}()
}

// done is closed when the command stops: a signal, or a part failed.
func (p *parts) done() <-chan struct{} { return p.ctx.Done() }

// err is the error of the part that failed, nil after a clean stop.
func (p *parts) err() error {
	if err := context.Cause(p.ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// stop stops every part and waits for them.
func (p *parts) stop() {
	p.cancel(nil)
	p.wg.Wait()
}

// newCollector builds the collector of cfg with this binary's build info.
func newCollector(cfg *config.Config, logger *slog.Logger, opts collector.Options) (*collector.Collector, error) {
	opts.Logger = logger
	opts.Build = collector.BuildInfo{Version: version, Revision: buildRevision(), GoVersion: runtime.Version()}
	return collector.New(collectorConfig(cfg), opts)
}

// reloadConfig re-reads the configuration file and applies what every
// command can change at run time: the bindings, the log level and the series
// cap. It validates the file exactly as a start does (loadConfig, the
// bindings spec, the web config file) before applying anything. It returns the new configuration for the command's other parts, or
// nil when the file is bad: that is logged, and the command keeps running on
// its previous configuration.
func reloadConfig(c *cli.Context, tags *bindings.Resolver, level *slog.LevelVar, col *collector.Collector, logger *slog.Logger) *config.Config {
	next, err := loadConfig(c)
	var spec bindings.Spec
	if err == nil {
		spec, err = next.BindingsSpec()
	}
	if err == nil {
		// The start refuses a bad web config file (exporter.New); so does a
		// reload, or the next restart would fail on a file SIGHUP accepted.
		err = exporter.ValidateWebConfig(next.Web.ConfigFile)
	}
	if err != nil {
		logger.Error("reload failed, keeping the running configuration", "err", err)
		return nil
	}
	tags.SetSpec(spec)
	if err := tags.Scan(); err != nil {
		logger.Warn("reload: rescanning links", "err", err)
	}
	if err := level.UnmarshalText([]byte(next.Log.Level)); err != nil {
		logger.Error("reload: bad log level", "err", err)
	}
	if err := col.SetConfig(collectorConfig(next)); err != nil {
		logger.Error("reload: metrics", "err", err)
	}
	logger.Info("configuration reloaded", "bindings", len(next.Bindings.Devices), "default_tag", next.Bindings.DefaultTag)
	return next
}
