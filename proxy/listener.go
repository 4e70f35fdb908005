package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// listener is one listening socket. It outlives reloads that keep its
// address: the pool and certificates are swapped in place, and a change of
// server settings (timeouts, header limit, TLS on or off) starts a new
// http.Server on the same socket while the old one drains.
type listener struct {
	addr  string
	sock  net.Listener // attributed and counting (httpstats)
	raw   *rawListener // sock's socket, for the own loop's accept (rawaccept.go)
	pool  atomic.Pointer[pool]
	certs atomic.Pointer[tls.Config] // nil: plain HTTP
	cur   atomic.Pointer[server]
	done  chan struct{} // closed when the accept loop ends

	nextPool  *pool // staged by a reload, set by commit
	nextCerts *tls.Config
}

// stage prepares the pool and certificates commit will install.
func (l *listener) stage(p *pool, certs *tls.Config) { l.nextPool, l.nextCerts = p, certs }

func (l *listener) commit() {
	l.pool.Store(l.nextPool)
	l.certs.Store(l.nextCerts)
	l.nextPool, l.nextCerts = nil, nil
}

// server is one http.Server fed by a listener's accept loop.
type server struct {
	srv      *http.Server
	q        *queue
	settings settings
	// Upgraded (hijacked) connections are not seen by Shutdown: they are
	// counted here, and cancelling base closes them (ReverseProxy ends an
	// upgrade when its request's context is done).
	upgrades sync.WaitGroup
	base     context.CancelFunc
	own      ownConns // connections of the own loop (settings.ownLoop)
}

type serverKey struct{}

// settings are what an http.Server cannot change while serving.
type settings struct {
	timeouts       config.ProxyTimeouts
	maxHeaderBytes int
	tls            bool
	ownLoop        bool // plaintext HTTP/1.1 in the own loop (proxy.http1_loop own)
}

func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		r.TLS, _ = r.Context().Value(tlsStateKey{}).(*tls.ConnectionState)
	}
	l.pool.Load().ServeHTTP(w, r)
}

// acceptLoop hands accepted connections to the current server until the
// socket is closed.
func (l *listener) acceptLoop(p *Proxy) {
	defer close(l.done)
	var delay time.Duration
	for {
		var (
			c   net.Conn
			err error
		)
		if s := l.cur.Load(); l.raw != nil && s != nil && s.settings.ownLoop {
			c, err = l.acceptOwn(p)
		} else {
			c, err = l.sock.Accept()
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "address", l.addr, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if c = p.limit.admit(c); c == nil {
			continue
		}
		if s := l.cur.Load(); s != nil && s.settings.ownLoop && p.serveOwn(l, s, c) {
			continue
		}
		// Accepted for the own loop, and its server changed meanwhile.
		if !c.(*limitedConn).fileToTCP() {
			continue
		}
		if s := l.cur.Load(); s != nil && s.settings.tls {
			c.(*limitedConn).viaTLS = true // heard from its first byte of HTTP
			go l.handshakeTLS(c, l.certs.Load(), s.q.idle)
			continue
		}
		for {
			s := l.cur.Load()
			if s == nil {
				c.Close()
				break
			}
			select {
			case s.q.ch <- c:
			case <-s.q.done: // replaced meanwhile: give it to the new one
				continue
			}
			break
		}
	}
}

// queue is the net.Listener an http.Server serves: connections come from
// the listener's accept loop; closing it does not close the socket.
type queue struct {
	ch        chan net.Conn
	done      chan struct{}
	once      sync.Once
	addr      net.Addr
	plaintext bool           // connections are wrapped in a headerConn with a gate
	limit     int            // the gate's head limit (max_header_bytes)
	idle      *atomic.Uint64 // the Proxy's count of connections closed idle
}

func newQueue(addr net.Addr, plaintext bool, limit int, idle *atomic.Uint64) *queue {
	return &queue{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr, plaintext: plaintext, limit: limit, idle: idle}
}

func (q *queue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		if q.plaintext {
			return &headerConn{Conn: c, g: newGate(q.limit), idle: q.idle}, nil
		}
		if tc, ok := c.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol != "h2" {
			return q.tlsH1(tc), nil
		}
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *queue) Close() error   { q.once.Do(func() { close(q.done) }); return nil }
func (q *queue) Addr() net.Addr { return q.addr }

// newServer builds the http.Server for settings st.
func (p *Proxy) newServer(l *listener, st settings) *server {
	t := st.timeouts
	s := &server{q: newQueue(l.sock.Addr(), !st.tls, st.maxHeaderBytes, &p.idleClosed), settings: st}
	base, cancel := context.WithCancel(context.WithValue(context.Background(), serverKey{}, s))
	s.base = cancel
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return base },
		Handler:           l,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Request,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    st.maxHeaderBytes,
		ErrorLog:          p.errLog,
		ConnState:         headerConnState,
		ConnContext:       tlsConnContext,
	}
	if st.tls {
		srv.TLSConfig = &tls.Config{
			NextProtos: []string{"h2", "http/1.1"},
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				return l.certs.Load(), nil
			},
		}
	}
	if p.stats != nil {
		p.stats.Instrument(srv)
	}
	s.srv = srv
	return s
}

// serve runs s until it is shut down.
func (p *Proxy) serve(s *server) {
	// TLS connections arrive with their handshake done (handshakeTLS).
	err := s.srv.Serve(s.q)
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		p.log.Error("server stopped", "err", err)
	}
}

// drain shuts s down gracefully, then forcibly after timeout.
// Upgraded connections get what is left of the timeout, then are closed.
func drain(s *server, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	own := s.own.shutdown()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	select {
	case <-own:
	case <-ctx.Done():
		s.own.closeAll()
	}
	done := make(chan struct{})
	go func() { s.upgrades.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	s.base()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// loadCerts builds the TLS configuration of a listener: the certificate
// matching the SNI name, the first one otherwise; ALPN h2 and http/1.1.
func loadCerts(certs []config.ProxyCert) (*tls.Config, error) {
	if len(certs) == 0 {
		return nil, nil
	}
	c := &tls.Config{NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	for _, pc := range certs {
		kp, err := tls.LoadX509KeyPair(pc.Cert, pc.Key)
		if err != nil {
			return nil, fmt.Errorf("loading certificate %s: %w", pc.Cert, err)
		}
		c.Certificates = append(c.Certificates, kp)
	}
	return c, nil
}
