package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/httpstats"
	"github.com/ipng/ipng-stats/logtail"
)

// Defaults for zero configuration values.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultRequestTimeout    = 60 * time.Second
	DefaultIdleTimeout       = 75 * time.Second
	DefaultConnectTimeout    = 5 * time.Second
	DefaultUpstreamTimeout   = 60 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultDrainTimeout      = 30 * time.Second
)

// defaultHTTP1Loop is proxy.http1_loop when unset. The tests run the
// package once more with it set to "net_http" (IPNG_STATS_HTTP1_LOOP).
var defaultHTTP1Loop = "own"

// Deps are the proxy's collaborators, owned by the caller. A nil Collector
// turns accounting (and the access log) off: connections are neither
// attributed nor counted, which is what the "accounting off" benchmark
// measures.
type Deps struct {
	Attributor *attribution.Attributor
	Collector  *collector.Collector
	Logger     *slog.Logger
	// ConnectionsCountedElsewhere: see httpstats.Options (the agent sets it
	// when its BPF events count connections).
	ConnectionsCountedElsewhere bool
}

// Proxy is the reverse proxy. Create it with New (which binds the
// listeners), serve with Run, reconfigure with Reload.
type Proxy struct {
	deps   Deps
	log    *slog.Logger
	errLog *log.Logger
	stats  *httpstats.Stats
	bufs   *bufferPool
	alog   atomic.Pointer[accessLog]
	// tail counts the access log's logtail lines across reloads.
	tail        logtail.Counters
	tailMetrics *logtail.Metrics
	// idleClosed counts client connections closed at timeouts.read_header
	// without having sent a byte (ipng_proxy_connections_idle_closed_total).
	idleClosed atomic.Uint64
	// limit bounds the open client connections (proxy.max_connections).
	limit *connLimit

	mu        sync.Mutex
	cfg       config.ProxyConfig
	listeners map[string]*listener
	pools     map[string]*pool
	runCtx    context.Context // nil until Run
	stopped   bool
	retired   map[*server]bool // replaced servers still serving their connections
	bg        sync.WaitGroup   // servers, accept loops, drains
}

// withDefaults fills zero values.
func withDefaults(c config.ProxyConfig) config.ProxyConfig {
	t := &c.Timeouts
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&t.ReadHeader, DefaultReadHeaderTimeout}, {&t.Request, DefaultRequestTimeout}, {&t.Idle, DefaultIdleTimeout},
		{&t.Connect, DefaultConnectTimeout}, {&t.Upstream, DefaultUpstreamTimeout}, {&c.DrainTimeout, DefaultDrainTimeout}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.HTTP1Loop == "" {
		c.HTTP1Loop = defaultHTTP1Loop
	}
	return c
}

// New checks cfg, opens the access log and binds every listener.
func New(cfg config.ProxyConfig, deps Deps) (*Proxy, error) {
	if deps.Collector != nil && deps.Attributor == nil {
		return nil, errors.New("proxy accounting needs an attributor")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{deps: deps, log: deps.Logger.With("component", "proxy"), bufs: newBufferPool(),
		listeners: map[string]*listener{}, pools: map[string]*pool{}, limit: newConnLimit()}
	p.tailMetrics = logtail.NewMetrics("proxy", &p.tail)
	p.errLog = slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)
	if deps.Collector != nil {
		p.stats = httpstats.New(httpstats.Options{Collector: deps.Collector, ConnectionsCountedElsewhere: deps.ConnectionsCountedElsewhere, Log: func(e *httpstats.Entry) {
			if a := p.alog.Load(); a.enabled() {
				a.write(e)
			}
		}})
	}
	if err := p.apply(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Run serves until ctx is done, then stops accepting and drains in-flight
// requests for up to drain_timeout.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.runCtx != nil {
		p.mu.Unlock()
		return errors.New("proxy is already running")
	}
	p.runCtx = ctx
	for _, pl := range p.pools {
		pl.start(ctx)
	}
	for _, l := range p.listeners {
		p.startListener(l, settingsOf(p.cfg, l))
	}
	p.log.Info("proxy running", "listeners", len(p.listeners), "upstreams", len(p.pools))
	p.mu.Unlock()

	<-ctx.Done()

	p.mu.Lock()
	p.stopped = true // no reloads from here on
	timeout := p.cfg.DrainTimeout
	p.log.Info("proxy draining", "timeout", timeout)
	var wg sync.WaitGroup
	for addr, l := range p.listeners {
		l.closeSocket()
		s := l.cur.Swap(nil)
		if s != nil {
			wg.Add(1)
			go func() { defer wg.Done(); drain(s, timeout) }()
		}
		delete(p.listeners, addr)
	}
	for s := range p.retired {
		wg.Add(1)
		go func() { defer wg.Done(); drain(s, timeout) }()
	}
	p.retired = nil
	p.mu.Unlock()
	wg.Wait()
	p.bg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, pl := range p.pools {
		pl.stop()
		pl.closeIdle()
		delete(p.pools, name)
	}
	p.alog.Swap(nil).close()
	p.log.Info("proxy stopped")
	return nil
}

// Reload applies cfg. Listeners whose address stays keep their socket and
// connections; on an error nothing changes.
func (p *Proxy) Reload(cfg config.ProxyConfig) error {
	if err := p.apply(cfg); err != nil {
		return err
	}
	p.log.Info("proxy reloaded", "listeners", len(cfg.Listeners), "upstreams", len(cfg.Upstreams))
	return nil
}

// Logtail returns the counters of the access log's logtail lines (sent,
// dropped because the sender was behind, lost to write errors) since New.
func (p *Proxy) Logtail() *logtail.Counters { return &p.tail }

// apply builds everything cfg needs, then commits it.
func (p *Proxy) apply(raw config.ProxyConfig) error {
	cfg := withDefaults(raw)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return errors.New("proxy has stopped")
	}

	// Build: pools (reusing unchanged ones), certificates, new sockets.
	pools := map[string]*pool{}
	for _, u := range cfg.Upstreams {
		if old, ok := p.pools[u.Name]; ok && reflect.DeepEqual(old.cfg, u) && cfg.Timeouts == p.cfg.Timeouts {
			pools[u.Name] = old
			continue
		}
		pools[u.Name] = newPool(u, cfg.Timeouts, p.bufs, p.log)
	}
	type plan struct {
		l     *listener
		fresh bool
	}
	var (
		plans   []plan
		created []*listener
	)
	fail := func(err error) error {
		for _, l := range created {
			l.closeSocket()
		}
		return err
	}
	for _, lc := range cfg.Listeners {
		pl, ok := pools[lc.Upstream]
		if !ok {
			return fail(fmt.Errorf("listener %s: unknown upstream %q", lc.Address, lc.Upstream))
		}
		tc, err := loadCerts(lc.TLS)
		if err != nil {
			return fail(fmt.Errorf("listener %s: %w", lc.Address, err))
		}
		l, ok := p.listeners[lc.Address]
		if !ok {
			sock, tl, err := p.listen(lc.Address)
			if err != nil {
				return fail(fmt.Errorf("listener %s: %w", lc.Address, err))
			}
			l = &listener{addr: lc.Address, sock: sock, raw: newRawListener(tl), done: make(chan struct{})}
			created = append(created, l)
		}
		l.stage(pl, tc)
		plans = append(plans, plan{l: l, fresh: !ok})
	}
	// The access log is opened again on every reload when it is a file, so
	// that logrotate's `create` + SIGHUP moves it to the new file. The
	// logtail counters are the Proxy's: they carry over.
	alog := p.alog.Load()
	if alog == nil || alog.cfg != cfg.AccessLog || (cfg.AccessLog.File != "" && cfg.AccessLog.File != "-") {
		a, err := newAccessLog(cfg.AccessLog, &p.tail, p.log)
		if err != nil {
			return fail(err)
		}
		alog = a
	}

	// Commit: nothing below fails.
	if old := p.alog.Swap(alog); old != nil && old != alog {
		old.close()
	}
	keep := map[string]bool{}
	for _, pl := range plans {
		l := pl.l
		keep[l.addr] = true
		l.commit()
		p.listeners[l.addr] = l
		if p.runCtx == nil {
			continue
		}
		st := settingsOf(cfg, l)
		if pl.fresh {
			p.startListener(l, st)
		} else if l.cur.Load().settings != st {
			p.replaceServer(l, st, cfg.DrainTimeout)
		}
	}
	for addr, l := range p.listeners {
		if !keep[addr] {
			delete(p.listeners, addr)
			l.closeSocket()
			if s := l.cur.Swap(nil); s != nil {
				p.bg.Add(1)
				go func() { defer p.bg.Done(); drain(s, cfg.DrainTimeout) }()
			}
		}
	}
	for name, old := range p.pools {
		if pools[name] != old {
			old.stop()
			time.AfterFunc(cfg.DrainTimeout, old.closeIdle)
		}
	}
	if p.runCtx != nil {
		for name, pl := range pools {
			if p.pools[name] != pl {
				pl.start(p.runCtx)
			}
		}
	}
	p.pools = pools
	p.limit.setMax(cfg.MaxConnections)
	p.cfg = cfg
	return nil
}

func settingsOf(cfg config.ProxyConfig, l *listener) settings {
	tls := l.certs.Load() != nil
	return settings{timeouts: cfg.Timeouts, maxHeaderBytes: cfg.MaxHeaderBytes, tls: tls, ownLoop: !tls && cfg.HTTP1Loop == "own"}
}

// startListener starts l's first server and its accept loop.
func (p *Proxy) startListener(l *listener, st settings) {
	s := p.newServer(l, st)
	l.cur.Store(s)
	p.bg.Add(2)
	go func() { defer p.bg.Done(); p.serve(s) }()
	go func() {
		defer p.bg.Done()
		l.acceptLoop(p)
	}()
}

// replaceServer moves l to a new server with settings st. The old one
// stops accepting but keeps serving its connections, keep-alive included,
// with the old settings; once its idle timeout has passed twice it is shut
// down (what is still busy then gets the drain timeout).
func (p *Proxy) replaceServer(l *listener, st settings, timeout time.Duration) {
	s := p.newServer(l, st)
	p.bg.Add(1)
	go func() { defer p.bg.Done(); p.serve(s) }()
	old := l.cur.Swap(s)
	old.q.Close()
	if p.retired == nil {
		p.retired = map[*server]bool{}
	}
	p.retired[old] = true
	time.AfterFunc(2*old.settings.timeouts.Idle, func() {
		p.mu.Lock()
		ok := p.retired[old]
		delete(p.retired, old)
		p.mu.Unlock()
		if ok {
			drain(old, timeout)
		}
	})
}

// listen binds a plain TCP socket (never MPTCP, never bound to a device),
// attributed and counting unless accounting is off. Accepted connections
// get no TCP keep-alive probes (like nginx's default, so_keepalive off):
// timeouts.idle closes idle clients, and enabling the probes costs four
// setsockopt calls per connection. It also returns the socket itself, for
// the own loop's accept.
func (p *Proxy) listen(addr string) (net.Listener, net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil || p.stats == nil {
		return l, l, err
	}
	al, err := attribution.NewListener(l, p.deps.Attributor)
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return p.stats.Listener(al), l, nil
}
