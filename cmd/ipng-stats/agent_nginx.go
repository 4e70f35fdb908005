package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/nginxlog"
)

// startNginx starts the nginx access-log ingest when nginx.enabled is set:
// it registers the ingest's ipng_nginx_* series in reg (nil: not
// registered) and runs it as a part of the agent (goRun: a failing ingest,
// e.g. an unreadable spool, stops the agent rather than leaving it running
// without counting nginx). It returns nil when the ingest is disabled. The
// collector must have been created with nginxlog.RejectReasons() and
// nginxlog.FallbackReasons() among its Options, so those reasons are
// exposed at 0. maps is nil without BPF (every line then gets the default
// tag, counted as nginx_bpf_unavailable); tagNames names the tags the program
// stamped at accept (nil without BPF). On SIGHUP call
// (*nginxlog.Ingest).Reload(cfg.Nginx) on the result.
func startNginx(cfg *config.Config, coll *collector.Collector, tags *bindings.Resolver, maps *loader.Maps, tagNames func(uint32) (string, bool),
	reg prometheus.Registerer, logger *slog.Logger, goRun func(string, func(context.Context) error)) (*nginxlog.Ingest, error) {
	if !cfg.Nginx.Enabled {
		return nil, nil
	}
	in, err := nginxlog.New(cfg.Nginx, nginxlog.Deps{Collector: coll, Bindings: tags, Maps: maps, TagNames: tagNames, Logger: logger})
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if err := reg.Register(in); err != nil {
			return nil, fmt.Errorf("registering nginx ingest metrics: %w", err)
		}
	}
	goRun("nginx ingest", in.Run)
	return in, nil
}
