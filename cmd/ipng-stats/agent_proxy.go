package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/proxy"
)

// startProxy starts the built-in proxy when cfg.Proxy is enabled, as a part
// run by goRun (which stops the process when a part fails), registers its
// own metrics (upstream state, logtail drops) in reg, and returns what
// SIGHUP calls with the reloaded configuration. With the proxy disabled it
// starts nothing. The agent calls it once after its collector and
// attributor exist, before the exporter serves reg.
func startProxy(cfg *config.Config, deps proxy.Deps, reg *prometheus.Registry, goRun func(string, func(context.Context) error)) (func(*config.Config), error) {
	if !cfg.Proxy.Enabled {
		return func(c *config.Config) {
			if c.Proxy.Enabled && deps.Logger != nil {
				deps.Logger.Warn("proxy enabled by a reload: restart to start it", "component", "proxy")
			}
		}, nil
	}
	p, err := proxy.New(cfg.Proxy, deps)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		if err := reg.Register(p); err != nil {
			return nil, err
		}
	}
	goRun("proxy", p.Run)
	return func(c *config.Config) {
		pc := c.Proxy
		if !pc.Enabled {
			pc = config.ProxyConfig{} // disabled by a reload: close every listener
		}
		if err := p.Reload(pc); err != nil && deps.Logger != nil {
			deps.Logger.Error("proxy reload failed, keeping its running configuration", "component", "proxy", "err", err)
		}
	}, nil
}
