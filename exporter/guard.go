package exporter

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConnections bounds the connections the metrics port holds open
// at once when Options.MaxConnections is 0. A scrape needs one; the bound
// keeps a flood of idle connections (each costs a goroutine and buffers)
// from growing the agent's memory.
const DefaultMaxConnections = 512

// DefaultReadHeaderTimeout is how long a client may take to send its
// request line and headers (Options.ReadHeaderTimeout 0): a slowloris
// client is closed after it.
const DefaultReadHeaderTimeout = 10 * time.Second

// DefaultWriteTimeout is how long a response may take to be read by the
// client (Options.WriteTimeout 0), from the end of its request's headers:
// far above any scrape_timeout (at most the scrape interval), so only a
// client that reads the body slower than any scraper would is cut off and
// stops pinning a connection (and a goroutine) in the middle of a request,
// where the connection limit cannot evict it.
const DefaultWriteTimeout = 2 * time.Minute

// maxHeaderBytes bounds a request's header block (net/http adds 4 KiB of
// slack): scrapes send a few hundred bytes. Larger ones get 431.
const maxHeaderBytes = 16 << 10

// Rejection reasons of ipng_exporter_rejected_total.
const (
	reasonBadRequest   = "bad_request"   // malformed, oversized headers: 400, 431, 501 from net/http
	reasonSlowRequest  = "slow_request"  // request started but not complete within the header timeout
	reasonIdleTimeout  = "idle_timeout"  // connected, sent nothing within the header timeout
	reasonEvicted      = "evicted"       // idle, closed to make room at the connection limit
	reasonOverLimit    = "over_limit"    // new, closed at once: the limit is reached and nothing can be evicted
	reasonWriteTimeout = "write_timeout" // the response not read by the client within the write timeout
	reasonTLSHandshake = "tls_handshake" // the TLS handshake failed (not TLS, a bad ClientHello)
)

var rejectReasons = []string{reasonBadRequest, reasonSlowRequest, reasonIdleTimeout, reasonEvicted, reasonOverLimit, reasonWriteTimeout, reasonTLSHandshake}

// connGuard counts what net/http rejects on its own (it never calls the
// handler for a malformed or too large request, or a timed-out one) and
// enforces the connection limit, from the server's ConnState hook.
type connGuard struct {
	max          int
	timeout      time.Duration
	writeTimeout time.Duration

	mu    sync.Mutex
	conns map[net.Conn]*connInfo

	rejected *prometheus.CounterVec
	open     prometheus.GaugeFunc
}

type connInfo struct {
	since  time.Time // accepted, or became idle: when the header timeout started
	state  http.ConnState
	served atomic.Bool // the handler ran for the current request
	// writeTimedOut: a write of the response failed at the write deadline.
	writeTimedOut atomic.Bool
	evicted       bool
}

type connInfoKey struct{}

func newConnGuard(max int, timeout, writeTimeout time.Duration) *connGuard {
	g := &connGuard{max: max, timeout: timeout, writeTimeout: writeTimeout, conns: map[net.Conn]*connInfo{}}
	g.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ipng_exporter_rejected_total",
		Help: "Connections to the metrics port closed without serving a request, by reason: bad_request (malformed, oversized headers), slow_request and idle_timeout (header timeout), evicted (idle, closed at the connection limit to make room), over_limit, write_timeout (the response not read within the write timeout: cut off), tls_handshake (the TLS handshake failed: not TLS, a bad ClientHello; one not completed within the header timeout is idle_timeout).",
	}, []string{"reason"})
	for _, r := range rejectReasons {
		g.rejected.WithLabelValues(r)
	}
	g.open = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ipng_exporter_connections_open",
		Help: "Connections the metrics port holds open.",
	}, func() float64 {
		g.mu.Lock()
		defer g.mu.Unlock()
		return float64(len(g.conns))
	})
	return g
}

// install sets the server's hooks and limits.
func (g *connGuard) install(srv *http.Server) {
	if srv.ErrorLog != nil {
		srv.ErrorLog = log.New(&errorLog{g: g, next: srv.ErrorLog}, "", 0)
	}
	srv.ReadHeaderTimeout = g.timeout
	srv.MaxHeaderBytes = maxHeaderBytes
	srv.WriteTimeout = g.writeTimeout
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		info := &connInfo{since: time.Now(), state: http.StateNew}
		g.mu.Lock()
		g.conns[c] = info
		g.mu.Unlock()
		return context.WithValue(ctx, connInfoKey{}, info)
	}
	srv.ConnState = g.connState
	h := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := r.Context().Value(connInfoKey{}).(*connInfo)
		if !ok {
			h.ServeHTTP(w, r)
			return
		}
		info.served.Store(true)
		h.ServeHTTP(&watchWriter{ResponseWriter: w, info: info}, r)
	})
}

func (g *connGuard) connState(c net.Conn, state http.ConnState) {
	g.mu.Lock()
	info, ok := g.conns[c]
	if !ok {
		g.mu.Unlock()
		return
	}
	prev, since := info.state, info.since
	info.state = state
	if state == http.StateIdle {
		info.since = time.Now()
	}
	var victim net.Conn
	reason := ""
	switch state {
	case http.StateNew:
		if len(g.conns) > g.max {
			victim = g.evictable(c)
			if victim == nil {
				victim, reason = c, reasonOverLimit
			} else {
				reason = reasonEvicted
			}
			g.conns[victim].evicted = true
		}
	case http.StateIdle:
		// A request answered without reaching the handler, on a connection
		// kept open, is one the web configuration's authentication answered
		// (401): served, not a rejection of the connection. (net/http
		// closes the connection after a malformed request.)
		info.served.Store(false)
	case http.StateClosed, http.StateHijacked:
		delete(g.conns, c)
		switch {
		case info.evicted: // counted when it was chosen
		case info.writeTimedOut.Load():
			reason = reasonWriteTimeout
		case prev == http.StateActive && !info.served.Load():
			reason = reasonBadRequest
			if time.Since(since) >= g.timeout {
				reason = reasonSlowRequest
			}
		case prev == http.StateNew && time.Since(since) >= g.timeout && handshaken(c):
			reason = reasonIdleTimeout // a failed TLS handshake is counted by errorLog
		}
	}
	g.mu.Unlock()
	if reason != "" {
		g.rejected.WithLabelValues(reason).Inc()
	}
	if victim != nil {
		victim.Close()
	}
}

// handshaken reports whether c is not TLS or has completed its handshake.
// Only for a connection whose handshake is over (it takes the handshake's
// lock).
func handshaken(c net.Conn) bool {
	tc, ok := c.(*tls.Conn)
	return !ok || tc.ConnectionState().HandshakeComplete
}

// evictable is the connection to close to make room for c: the one that
// has waited longest without sending a byte, else the longest idle
// keep-alive one; nil when every other connection is serving a request.
// Called with g.mu held.
func (g *connGuard) evictable(c net.Conn) net.Conn {
	var best net.Conn
	var bestInfo *connInfo
	for k, in := range g.conns {
		if k == c || in.evicted || in.state != http.StateNew && in.state != http.StateIdle {
			continue
		}
		if bestInfo == nil || rank(in) < rank(bestInfo) || rank(in) == rank(bestInfo) && in.since.Before(bestInfo.since) {
			best, bestInfo = k, in
		}
	}
	return best
}

// rank orders eviction: connections that never sent anything first.
func rank(in *connInfo) int {
	if in.state == http.StateNew {
		return 0
	}
	return 1
}

// Describe and Collect make the guard a prometheus.Collector.
func (g *connGuard) Describe(ch chan<- *prometheus.Desc) {
	g.rejected.Describe(ch)
	g.open.Describe(ch)
}

func (g *connGuard) Collect(ch chan<- prometheus.Metric) {
	g.rejected.Collect(ch)
	g.open.Collect(ch)
}

// handshakeErrorPrefix starts what net/http logs for every failed TLS
// handshake (and nothing else); it has no other hook for them.
const handshakeErrorPrefix = "http: TLS handshake error from "

// errorLog is the server's ErrorLog: it counts failed TLS handshakes instead
// of logging one line each (a flood of them would flood the log) and passes
// everything else to next.
type errorLog struct {
	g    *connGuard
	next *log.Logger
}

func (w *errorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	rest, ok := strings.CutPrefix(msg, handshakeErrorPrefix)
	if !ok {
		w.next.Print(msg)
		return len(p), nil
	}
	switch {
	case strings.HasSuffix(rest, ": EOF"):
		// Closed before sending a byte (a TCP check): not a rejection, as
		// on plain HTTP.
	case strings.Contains(rest, "i/o timeout"):
		// Not completed within the header timeout: silent, or stalled in
		// the middle of its ClientHello.
		w.g.rejected.WithLabelValues(reasonIdleTimeout).Inc()
	case strings.Contains(rest, "use of closed network connection"):
		// Evicted (counted then) or closed at shutdown.
	default:
		w.g.rejected.WithLabelValues(reasonTLSHandshake).Inc()
	}
	return len(p), nil
}

// watchWriter notes a response write that failed at the write deadline.
type watchWriter struct {
	http.ResponseWriter
	info *connInfo
}

func (w *watchWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		w.info.writeTimedOut.Store(true)
	}
	return n, err
}

// Flush and Unwrap keep what the wrapped writer offers.
func (w *watchWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *watchWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
