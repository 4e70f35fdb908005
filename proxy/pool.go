package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// Defaults of a pool.
const (
	defaultMaxFails    = 1
	defaultFailTimeout = 10 * time.Second
	maxBackoff         = 8 // a backend stays out at most 8 × fail_timeout
	defaultHCInterval  = 5 * time.Second
	defaultHCTimeout   = 2 * time.Second
)

// backend is one upstream server of a pool.
type backend struct {
	addr   string
	rp     *httputil.ReverseProxy // upgrades and what the fast path does not take
	conns  *upstreamConns         // the fast path's connections
	active atomic.Int64           // requests in progress (least_conn)

	fails     atomic.Int32 // consecutive failures
	downs     atomic.Int32 // consecutive times taken out (backoff exponent)
	downUntil atomic.Int64 // unix nanos; 0 = in service
	hcDown    atomic.Bool  // failed its last active check
}

// pool is an upstream: backends, balancing and health.
type pool struct {
	name        string
	cfg         config.ProxyUpstream
	leastConn   bool
	maxFails    int32
	failTimeout time.Duration
	backends    []*backend
	next        atomic.Uint32
	transport   *http.Transport
	bufs        *bufferPool
	log         *slog.Logger
	keepalive   time.Duration // idle upstream connections
	stopBG      context.CancelFunc
	bgDone      sync.WaitGroup
}

func (b *backend) alive(now int64) bool {
	if b.hcDown.Load() {
		return false
	}
	d := b.downUntil.Load()
	return d == 0 || now >= d
}

// pick returns a backend in service, or nil when there is none. A pool of
// one server never takes it out (like nginx).
func (p *pool) pick() *backend {
	n := len(p.backends)
	if n == 1 {
		return p.backends[0]
	}
	now := time.Now().UnixNano()
	start := int(p.next.Add(1))
	var best *backend
	for i := range n {
		b := p.backends[(start+i)%n]
		if !b.alive(now) {
			continue
		}
		if !p.leastConn {
			return b
		}
		if best == nil || b.active.Load() < best.active.Load() {
			best = b
		}
	}
	return best
}

// failed counts a transport failure; max_fails of them in a row take the
// backend out for fail_timeout, doubled on every consecutive time out.
func (p *pool) failed(b *backend) {
	if len(p.backends) == 1 || b.fails.Add(1) < p.maxFails {
		return
	}
	b.fails.Store(0)
	k := min(b.downs.Add(1), maxBackoff)
	backoff := p.failTimeout << (k - 1)
	if lim := p.failTimeout * maxBackoff; backoff > lim {
		backoff = lim
	}
	b.downUntil.Store(time.Now().Add(backoff).UnixNano())
}

// succeeded puts a backend back in service and resets its backoff.
func (b *backend) succeeded() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if b.downs.Load() != 0 {
		b.downs.Store(0)
		b.downUntil.Store(0)
	}
}

func newTransport(t config.ProxyTimeouts, keepalive time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       keepalive,
		ResponseHeaderTimeout: t.Upstream,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ReadBufferSize:        16 << 10,
		WriteBufferSize:       16 << 10,
	}
}

// runHealthChecks probes every backend's path every interval until ctx is
// done; a non-2xx/3xx answer or an error takes it out until it passes again.
func (p *pool) runHealthChecks(ctx context.Context) {
	hc := p.cfg.HealthCheck
	interval, timeout := hc.Interval, hc.Timeout
	if interval <= 0 {
		interval = defaultHCInterval
	}
	if timeout <= 0 {
		timeout = defaultHCTimeout
	}
	client := &http.Client{Transport: p.transport, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for _, b := range p.backends {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+hc.Path, nil)
			if err != nil {
				return
			}
			resp, err := client.Do(req)
			ok := err == nil && resp.StatusCode < 400
			if err == nil {
				resp.Body.Close()
			}
			b.hcDown.Store(!ok)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// closeIdle closes the idle upstream connections of both paths.
func (p *pool) closeIdle() {
	p.transport.CloseIdleConnections()
	for _, b := range p.backends {
		b.conns.closeIdle()
	}
}

func (p *pool) stop() {
	if p.stopBG != nil {
		p.stopBG()
		p.bgDone.Wait()
	}
}

// closeExpired closes the fast path's idle connections once they have been
// idle for the keep-alive timeout (the Transport does so for its own), until
// ctx is done.
func (p *pool) closeExpired(ctx context.Context) {
	t := time.NewTicker(max(p.keepalive/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, b := range p.backends {
				b.conns.closeExpired(now)
			}
		}
	}
}
