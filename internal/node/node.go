// Package node assembles one ipng-stats process, the agent or the
// stand-alone proxy, from a validated configuration: logger, bindings, the
// BPF program (loaded by the agent, opened from the agent's pins by the
// proxy), attribution, collector, connection counts, exporter, the proxy
// and the nginx ingest. It defines once what both commands share: signal
// handling (SIGHUP is caught before anything is set up; SIGTERM and SIGINT
// stop), the GC setting, the SIGHUP reload and the shutdown order. cmd
// parses flags and calls Run once; it does not count nor attach anything
// itself (packages loader, attribution, collector, ...).
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/handshake"
	"github.com/ipng/ipng-stats/internal/caps"
	"github.com/ipng/ipng-stats/loader"
)

// Role says which command the node runs as.
type Role int

const (
	// RoleAgent loads and attaches the sock_ops program (by
	// attribution.mode), counts connections in the kernel, and runs the
	// nginx ingest and the proxy when the configuration enables them.
	RoleAgent Role = iota
	// RoleProxy runs only the proxy (proxy.enabled is implied) and reads
	// the maps a running agent pinned; it loads nothing.
	RoleProxy
)

func (r Role) String() string {
	if r == RoleProxy {
		return "proxy"
	}
	return "agent"
}

// ProxyGCPercent is the GC target of a node that runs the proxy, unless the
// GOGC environment variable is set: the proxy's live heap is small and its
// garbage per request is not, so collecting less often buys a few percent
// of throughput.
const ProxyGCPercent = 400

// Options configure Run.
type Options struct {
	Role Role
	// Load reads and validates the configuration (file, environment and
	// flags): once at the start and again at every SIGHUP.
	Load func() (*config.Config, error)
	// ConfigName names the configuration in the start log line.
	ConfigName string
	// LogOutput receives the log (stderr).
	LogOutput io.Writer
	// Version is the version of the start log line; Build is the
	// ipng_build_info series, and Build.Version the exporter's version.
	Version string
	Build   collector.BuildInfo
	// AfterAttach run in order once the start's privileged work is done:
	// the BPF program attached (agent) or the agent's pins opened (proxy),
	// and every part built (the proxy's listeners bound, the nginx ingest's
	// network namespace read, the Parts below built); before any part
	// runs. This is where capabilities that are no longer needed are
	// dropped. A hook's error stops the start.
	AfterAttach []func(*Node) error
	// Parts build further long-lived parts from the assembled node, after
	// the node's own; they run beside them, stop with them, and are
	// reloaded after them on SIGHUP. A part does the privileged work that
	// needs more than the capabilities the node keeps (binding a low port
	// without CAP_NET_BIND_SERVICE kept) when it is built, not in Start or
	// Run, which come after the AfterAttach hooks.
	Parts []func(*Node) (Part, error)
}

// Part is one long-lived part of a node: the exporter, the bindings
// watcher, the proxy, the nginx ingest...
type Part struct {
	Name string
	// Start, when set, runs once the node is built and the AfterAttach
	// hooks are done (with the capabilities the node keeps), in the order
	// of the parts, before any part runs and before the node says it runs
	// ("agent running", /-/ready): a part that attaches something (the
	// handshake programs to the bound devices) does it here, so that what
	// arrives from then on is counted. An error stops the start, prefixed
	// with the part's name, and no part runs; what a Start attached is
	// released by the node's closers, not by Run, which may never run.
	Start func(ctx context.Context) error
	// Run runs the part until ctx is done. An error other than
	// context.Canceled stops the node, and becomes its error.
	Run func(ctx context.Context) error
	// Reload applies a reloaded configuration; nil when the part has
	// nothing to reload. It logs what it refuses and keeps running.
	Reload func(*config.Config)
}

// Node is what the builder assembled; hooks and parts read it.
type Node struct {
	Role     Role
	Config   *config.Config // the configuration at the start
	Logger   *slog.Logger
	Bindings *bindings.Resolver
	// Program is the loaded program (agent with BPF); nil otherwise.
	Program *loader.Program
	// Maps are the program's maps (the agent's own, or the pins the proxy
	// opened); nil without BPF.
	Maps       *loader.Maps
	Attributor *attribution.Attributor
	Collector  *collector.Collector
	// Registry holds the process's own series, served beside the
	// collector's.
	Registry *prometheus.Registry

	level    *slog.LevelVar
	bpfErr   error
	tagNames func(uint32) (string, bool) // nil without the agent's TagTable
	parts    []Part
	closers  []func()
	load     func() (*config.Config, error)
	ready    atomic.Bool // the agent's /-/ready
	// handshakes counts TCP handshake stages (agent with
	// handshakes.enabled); nil otherwise.
	handshakes atomic.Pointer[handshake.Monitor]
}

// Run runs the node until ctx is done, SIGTERM or SIGINT arrives, or a part
// fails. SIGHUP reloads the configuration from the first moment: a reload
// sent while the node starts is applied once it runs.
func Run(ctx context.Context, opts Options) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	n, err := build(opts)
	if n != nil {
		defer n.close()
	}
	if err != nil {
		return err
	}
	return n.run(ctx, hup)
}

// build loads the configuration and assembles the node. On error, the
// returned node (when not nil) holds what must be closed.
func build(opts Options) (*Node, error) {
	cfg, err := opts.Load()
	if err != nil {
		return nil, err
	}
	if opts.Role == RoleProxy {
		if len(cfg.Proxy.Listeners) == 0 {
			return nil, errors.New("the configuration has no proxy.listeners")
		}
		cfg.Proxy.Enabled = true
	}
	setGC(cfg)
	n := &Node{Role: opts.Role, Config: cfg, level: new(slog.LevelVar), load: opts.Load}
	out := opts.LogOutput
	if out == nil {
		out = os.Stderr
	}
	if n.Logger, err = NewLogger(out, cfg.Log.Level, cfg.Log.Format, n.level); err != nil {
		return nil, err
	}
	n.Logger.Info("starting ipng-stats "+opts.Role.String(), "version", opts.Version, "config", opts.ConfigName)
	if err := n.setup(opts); err != nil {
		return n, err
	}
	if err := n.addParts(opts); err != nil {
		return n, err
	}
	for _, mk := range opts.Parts {
		p, err := mk(n)
		if err != nil {
			return n, err
		}
		n.parts = append(n.parts, p)
	}
	for _, hook := range opts.AfterAttach {
		if err := hook(n); err != nil {
			return n, err
		}
	}
	// Least privilege: everything above needed root (the agent's program
	// attached, the proxy's listeners bound, the agent's pins opened); what
	// follows needs at most what caps.Keep lists (docs/reliability.md).
	// The proxy command is network-facing like the agent: it drops too.
	if err := caps.AfterAttach(n.needs(), n.Logger); err != nil {
		return n, err
	}
	return n, nil
}

// needs are what the node still does once it runs, by role. Both may bind
// a listener below port 1024 on a reload (the proxy's, always enabled in
// the proxy role) or in the metrics goroutine, and read the program's maps
// through the descriptors they hold. Only the agent reopens nginx's spool,
// removes and re-creates its pins, and attaches tc programs; the proxy
// opens the agent's pins once, at the start (openPins), and never again.
func (n *Node) needs() caps.Needs {
	cfg := n.Config
	need := caps.Needs{BindLowPorts: cfg.Proxy.Enabled || caps.LowPort(cfg.Web.ListenAddress), MapAccess: caps.MapProbe(n.Maps)}
	if n.Role == RoleAgent {
		need.NginxSpool = cfg.Nginx.Enabled
		need.Pins = n.Program != nil
		need.TCPrograms = n.handshakes.Load() != nil
	}
	return need
}

// setGC applies ProxyGCPercent when the node runs the proxy (as the proxy
// command, or in the agent with proxy.enabled) and GOGC is not set.
func setGC(cfg *config.Config) {
	if cfg.Proxy.Enabled && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(ProxyGCPercent)
	}
}

// close releases what setup opened, last first: the program (detached
// unless bpf.keep_on_exit) or the pinned maps.
func (n *Node) close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
}

// run runs the parts and applies SIGHUP reloads until the node stops.
func (n *Node) run(ctx context.Context, hup <-chan os.Signal) error {
	for _, p := range n.parts {
		if p.Start == nil {
			continue
		}
		if err := p.Start(ctx); err != nil {
			err = fmt.Errorf("%s: %w", p.Name, err)
			n.Logger.Error("stopping "+n.Role.String(), "err", err)
			return err
		}
	}
	g, gctx := newGroup(ctx)
	for _, p := range n.parts {
		g.run(p.Name, p.Run)
	}
	n.ready.Store(true)
	n.logRunning()
	for {
		select {
		case <-gctx.Done():
			err := g.wait()
			if err != nil {
				n.Logger.Error("stopping "+n.Role.String(), "err", err)
				return err
			}
			n.Logger.Info("stopping " + n.Role.String())
			return nil
		case <-hup:
			if next := n.reload(); next != nil {
				for _, p := range n.parts {
					if p.Reload != nil {
						p.Reload(next)
					}
				}
			}
		}
	}
}

func (n *Node) logRunning() {
	cfg := n.Config
	if n.Role == RoleProxy {
		mode, _ := attribution.ParseMode(cfg.Attribution.Mode)
		n.Logger.Info("proxy command running", "listen", cfg.Web.ListenAddress, "attribution", mode)
		return
	}
	n.Logger.Info("agent running", "listen", cfg.Web.ListenAddress, "bindings", len(cfg.Bindings.Devices),
		"default_tag", cfg.Bindings.DefaultTag, "bpf", n.Program != nil)
}

// reload re-reads the configuration and applies what every node can change
// at run time: the bindings, the log level and the series cap. It checks the
// file exactly as a start does (Check) before applying anything. It returns
// the new configuration for the parts, or nil when the file is refused:
// that is logged, and the node keeps running on its previous configuration.
func (n *Node) reload() *config.Config {
	next, spec, err := Check(n.load)
	if err != nil {
		n.Logger.Error("reload failed, keeping the running configuration", "err", err)
		return nil
	}
	if n.Role == RoleProxy {
		next.Proxy.Enabled = true
	}
	n.Bindings.SetSpec(spec)
	if err := n.Bindings.Scan(); err != nil {
		n.Logger.Warn("reload: rescanning links", "err", err)
	}
	if err := n.level.UnmarshalText([]byte(next.Log.Level)); err != nil {
		n.Logger.Error("reload: bad log level", "err", err)
	}
	if err := n.Collector.SetConfig(CollectorConfig(next)); err != nil {
		n.Logger.Error("reload: metrics", "err", err)
	}
	n.Logger.Info("configuration reloaded", "bindings", len(next.Bindings.Devices), "default_tag", next.Bindings.DefaultTag)
	return next
}
