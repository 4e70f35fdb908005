package proxy

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/httpstats"
)

// StatusClientClosed is recorded when the client went away before the
// upstream answered (nginx's 499).
const StatusClientClosed = 499

// bufferPool hands ReverseProxy its copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

type attemptsKey struct{}

// newPool builds the pool of an upstream; health checks start with start.
func newPool(u config.ProxyUpstream, t config.ProxyTimeouts, bufs *bufferPool, logger *slog.Logger) *pool {
	keepalive := u.KeepaliveTimeout
	if keepalive <= 0 {
		keepalive = DefaultKeepaliveTimeout
	}
	p := &pool{name: u.Name, cfg: u, leastConn: u.Balance == "least_conn", keepalive: keepalive,
		maxFails: int32(u.MaxFails), failTimeout: u.FailTimeout, transport: newTransport(t, keepalive), bufs: bufs, log: logger}
	if p.maxFails <= 0 {
		p.maxFails = defaultMaxFails
	}
	if p.failTimeout <= 0 {
		p.failTimeout = defaultFailTimeout
	}
	errLog := log.New(io.Discard, "", 0)
	for _, addr := range u.Servers {
		b := &backend{addr: addr, conns: &upstreamConns{addr: addr, timeout: t.Upstream, keepalive: keepalive,
			dialer: &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}}}
		b.rp = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme = "http"
				pr.Out.URL.Host = addr
				pr.Out.Host = pr.In.Host
				// Rewrite drops the inbound X-Forwarded-* headers; keep the
				// client's chain so SetXForwarded appends to it, as the fast
				// path does.
				if xff, ok := pr.In.Header["X-Forwarded-For"]; ok && !namedInConnection(pr.In.Header, "X-Forwarded-For") {
					pr.Out.Header["X-Forwarded-For"] = xff
				}
				pr.SetXForwarded()
			},
			Transport:  p.transport,
			BufferPool: bufs,
			ErrorLog:   errLog,
			ModifyResponse: func(*http.Response) error {
				b.succeeded()
				return nil
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				p.upstreamError(w, r, b, err)
			},
		}
		p.backends = append(p.backends, b)
	}
	return p
}

// start runs the pool's background work until stop: closing idle
// connections past their keep-alive timeout, and the health checks.
func (p *pool) start(ctx context.Context) {
	ctx, p.stopBG = context.WithCancel(ctx)
	p.bgDone.Add(1)
	go func() {
		defer p.bgDone.Done()
		p.closeExpired(ctx)
	}()
	if p.cfg.HealthCheck.Path == "" {
		return
	}
	p.bgDone.Add(1)
	go func() {
		defer p.bgDone.Done()
		p.runHealthChecks(ctx)
	}()
}

// ServeHTTP proxies r to a backend of the pool.
func (p *pool) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := p.pick()
	if b == nil {
		http.Error(w, "no live upstreams", http.StatusBadGateway)
		return
	}
	p.forward(w, r, b)
}

func (p *pool) forward(w http.ResponseWriter, r *http.Request, b *backend) {
	httpstats.SetUpstream(w, b.addr)
	if r.Header.Get("Upgrade") != "" {
		// The server's request deadlines would end a WebSocket; a drain
		// waits for it (see drain).
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{})
		rc.SetWriteDeadline(time.Time{})
		if s, ok := r.Context().Value(serverKey{}).(*server); ok {
			s.upgrades.Add(1)
			defer s.upgrades.Done()
		}
		w = &upgradeWriter{ResponseWriter: w}
	}
	if bodyOf(r) == nil {
		wrapBody(r)
	}
	b.active.Add(1)
	defer b.active.Add(-1)
	if fastPathOK(r) {
		if err := p.fastForward(w, r, b); err != nil {
			p.upstreamError(w, r, b, err)
		}
		return
	}
	b.rp.ServeHTTP(w, traced(r))
}

// upstreamError answers a request that could not be proxied: 499 when the
// client is gone, 408 or 400 when reading its body failed (client errors,
// never charged to the server), else 502, or 504 on a timeout. Failures of
// the server count against it (max_fails) unless they happened on a reused
// idle connection before any response byte (it closed the connection while
// idle). A request without a body whose connection could not even be made
// is retried once per other backend in service.
func (p *pool) upstreamError(w http.ResponseWriter, r *http.Request, b *backend, err error) {
	// ReverseProxy hands its outgoing request: go back to the client's.
	if ct := traceOf(r); ct != nil {
		r = ct.in
	}
	// A failed read of the client's body also cancels its context: the
	// body's error says why.
	if cerr := bodyOf(r).clientErr(); cerr != nil {
		status := clientStatus(cerr, r.Context().Err() != nil)
		p.log.Debug("client error", "upstream", p.name, "server", b.addr, "status", status, "err", cerr)
		// The request's framing is lost: no further request on this
		// connection.
		w.Header().Set("Connection", "close")
		http.Error(w, http.StatusText(status), status)
		return
	}
	if r.Context().Err() != nil {
		w.WriteHeader(StatusClientClosed)
		return
	}
	var stale *staleConnError
	counted := !errors.As(err, &stale) && !staleOnReuse(r, err)
	if counted {
		p.failed(b)
	}
	var op *net.OpError
	dialErr := errors.As(err, &op) && op.Op == "dial"
	tries, _ := r.Context().Value(attemptsKey{}).(int)
	if dialErr && bodyOf(r) == nil && tries+1 < len(p.backends) {
		if nb := p.pick(); nb != nil && nb != b {
			r = r.WithContext(context.WithValue(r.Context(), attemptsKey{}, tries+1))
			p.forward(w, r, nb)
			return
		}
	}
	status := http.StatusBadGateway
	if isTimeout(err) {
		status = http.StatusGatewayTimeout
	}
	p.log.Warn("upstream error", "upstream", p.name, "server", b.addr, "status", status, "max_fails_counted", counted, "err", err)
	http.Error(w, http.StatusText(status), status)
}

// upgradeWriter closes the client connection after a refused upgrade (any
// status but 101): the strict gate passes an upgrade request's connection
// through from its head on, so no further request may be read on it.
type upgradeWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *upgradeWriter) WriteHeader(code int) {
	if !w.wrote && code != http.StatusSwitchingProtocols && code >= 200 {
		w.wrote = true
		w.Header().Set("Connection", "close")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *upgradeWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
