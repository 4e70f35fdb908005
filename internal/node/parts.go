package node

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/nginxlog"
	"github.com/ipng/ipng-stats/proxy"
	"github.com/ipng/ipng-stats/status"
)

// addParts builds the node's own parts: the exporter (with the status
// page), the collector, the bindings watcher, and the nginx ingest (agent)
// and the proxy when enabled. Each registers its series before the
// exporter serves.
func (n *Node) addParts(opts Options) error {
	cfg := n.Config
	eopts := exporter.Options{ListenAddress: cfg.Web.ListenAddress, WebConfigFile: cfg.Web.ConfigFile,
		Collector: n.Collector, Registry: n.Registry, Logger: n.Logger, Version: opts.Build.Version,
		Health: liveHealth(n.Role.String(), cfg.Attribution.Mode, n.Attributor, n.Bindings, n.Registry)}
	if n.Role == RoleAgent {
		eopts.Ready = func() error {
			if !n.ready.Load() {
				return errors.New("starting")
			}
			return nil
		}
	}
	srv, err := exporter.New(eopts)
	if err != nil {
		return err
	}
	if err := status.Mount(srv, n.Logger); err != nil {
		return err
	}
	n.parts = append(n.parts,
		Part{Name: "exporter", Run: srv.Run},
		Part{Name: "collector", Run: n.Collector.Run},
		Part{Name: "bindings", Run: func(ctx context.Context) error { return n.Bindings.Run(ctx, cfg.Bindings.RescanInterval) }})
	if n.Program != nil {
		// Notice pins removed while the node runs and pin them again.
		n.parts = append(n.parts, Part{Name: "pins", Run: func(ctx context.Context) error {
			return n.Program.WatchPins(ctx, loader.PinCheckInterval)
		}})
	}
	if n.Role == RoleAgent {
		if err := n.addNginx(); err != nil {
			return err
		}
		n.addHandshakes()
	}
	return n.addProxy()
}

// addNginx adds the nginx access-log ingest when nginx.enabled is set. A
// failing ingest (e.g. an unreadable spool) stops the node rather than
// leaving it running without counting nginx. Without BPF every line gets
// the default tag, counted as nginx_bpf_unavailable.
func (n *Node) addNginx() error {
	cfg := n.Config
	if !cfg.Nginx.Enabled {
		return nil
	}
	in, err := nginxlog.New(cfg.Nginx, nginxlog.Deps{Collector: n.Collector, Bindings: n.Bindings, Maps: n.Maps,
		TagNames: n.tagNames, Logger: n.Logger})
	if err != nil {
		return err
	}
	if err := n.Registry.Register(in); err != nil {
		return fmt.Errorf("registering nginx ingest metrics: %w", err)
	}
	n.parts = append(n.parts, Part{Name: "nginx ingest", Run: in.Run, Reload: func(next *config.Config) {
		if next.Nginx.Enabled != cfg.Nginx.Enabled {
			n.Logger.Warn("nginx.enabled changed by a reload: restart the agent to apply it")
		}
		if err := in.Reload(next.Nginx); err != nil {
			n.Logger.Error("nginx ingest reload", "err", err)
		}
	}})
	return nil
}

// addProxy adds the built-in proxy when proxy.enabled is set (always in
// the proxy role); otherwise a part that only says a reload enabling it
// needs a restart. Connections the agent's program stamped are counted by
// the agent, in the kernel.
func (n *Node) addProxy() error {
	cfg := n.Config
	if !cfg.Proxy.Enabled {
		n.parts = append(n.parts, Part{Name: "proxy", Reload: func(next *config.Config) {
			if next.Proxy.Enabled {
				n.Logger.Warn("proxy enabled by a reload: restart to start it", "component", "proxy")
			}
		}})
		return nil
	}
	p, err := proxy.New(cfg.Proxy, proxy.Deps{Attributor: n.Attributor, Collector: n.Collector, Logger: n.Logger,
		ConnectionsCountedElsewhere: n.Attributor.UsesBPF()})
	if err != nil {
		return err
	}
	if err := n.Registry.Register(p); err != nil {
		return err
	}
	n.parts = append(n.parts, Part{Name: "proxy", Run: p.Run, Reload: func(next *config.Config) {
		pc := next.Proxy
		if !pc.Enabled {
			pc = config.ProxyConfig{} // disabled by a reload: close every listener
		}
		if err := p.Reload(pc); err != nil {
			n.Logger.Error("proxy reload failed, keeping its running configuration", "component", "proxy", "err", err)
		}
	}})
	return nil
}

// group runs the parts of a node with errgroup: the first part that fails
// stops the others, and its error (prefixed with the part's name) becomes
// the node's. Errors of parts that stop after the node was told to stop
// (signal, or another part failed) are not the cause, and are dropped.
type group struct {
	g    *errgroup.Group
	ctx  context.Context
	stop context.Context // the node's own context: done on a signal
}

func newGroup(ctx context.Context) (*group, context.Context) {
	g, gctx := errgroup.WithContext(ctx)
	return &group{g: g, ctx: gctx, stop: ctx}, gctx
}

// run starts fn as the part called name; a part without Run is skipped.
func (g *group) run(name string, fn func(context.Context) error) {
	if fn == nil {
		return
	}
	g.g.Go(func() error {
		err := fn(g.ctx)
		if err == nil || errors.Is(err, context.Canceled) || g.stop.Err() != nil {
			return nil
		}
		return fmt.Errorf("%s: %w", name, err)
	})
}

// wait waits for every part and returns the first failure.
func (g *group) wait() error { return g.g.Wait() }
