package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/httpstats"
)

// The proxy terminates TLS itself, before the http.Server sees a
// connection, so that HTTP/1.1 over TLS gets what plain HTTP gets:
//
//   - the handshake runs in its own goroutine within timeouts.read_header;
//     a client that does not complete it in time, or does not speak TLS,
//     is closed and counted in ipng_proxy_connections_idle_closed_total
//     (it sent no request);
//   - an HTTP/1.1 connection (ALPN http/1.1 or none) is served through a
//     headerConn with a gate over the decrypted stream: strict parsing,
//     400/431/408 answered by the proxy and recorded under the client's
//     tag (httpstats follows the plaintext: tlsPlainConn);
//   - proxy.max_connections sees such a connection as quiet (evictable)
//     until its first byte of HTTP, not of TLS.
//
// HTTP/2 connections are handed to net/http as the *tls.Conn it needs;
// they stay quiet (evictable) until their first stream: through the
// preface and SETTINGS, and without a preface (headerConnState follows
// net/http's HTTP/2 server through its ConnState hook).

// handshakeTLS completes the TLS handshake of an admitted connection c
// (a *limitedConn) with certs, then hands it to the listener's current
// server; a failed handshake closes c.
func (l *listener) handshakeTLS(c net.Conn, certs *tls.Config, idle *atomic.Uint64) {
	timeout := DefaultReadHeaderTimeout
	if s := l.cur.Load(); s != nil {
		timeout = s.settings.timeouts.ReadHeader
	}
	tc := tls.Server(c, certs)
	tc.SetDeadline(time.Now().Add(timeout))
	err := tc.HandshakeContext(context.Background())
	if err == nil {
		err = tc.SetDeadline(time.Time{})
	}
	if err != nil {
		var re tls.RecordHeaderError
		switch {
		case errors.As(err, &re) && re.Conn != nil:
			// Not TLS: answered as net/http does, for a plain HTTP client.
			if looksLikeHTTP(re.RecordHeader[:]) {
				re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
				io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			}
			idle.Add(1)
		case errors.Is(err, os.ErrDeadlineExceeded):
			idle.Add(1)
		}
		c.Close()
		return
	}
	l.handOff(tc)
}

func looksLikeHTTP(h []byte) bool {
	switch string(h) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// handOff gives c to the listener's current server (acceptLoop's hand-off).
func (l *listener) handOff(c net.Conn) {
	for {
		s := l.cur.Load()
		if s == nil {
			c.Close()
			return
		}
		select {
		case s.q.ch <- c:
			return
		case <-s.q.done: // replaced meanwhile: give it to the new one
		}
	}
}

// heard marks the *limitedConn below c as having sent a byte of HTTP.
func heard(c net.Conn) {
	if lc := limitedOf(c); lc != nil {
		lc.hear()
	}
}

// limitedOf is the *limitedConn below c, or nil.
func limitedOf(c net.Conn) *limitedConn {
	for range 4 {
		switch v := c.(type) {
		case *limitedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// tlsH1 wraps an HTTP/1.1 connection over TLS for a server with the gate's
// head limit: what net/http reads and writes is checked and answered as
// on a plaintext connection.
func (q *queue) tlsH1(tc *tls.Conn) net.Conn {
	pc := &tlsPlainConn{Conn: tc, hs: httpstats.Of(tc)}
	if pc.hs != nil {
		pc.hs.PlaintextAbove()
	}
	return &headerConn{Conn: pc, g: newGate(q.limit), idle: q.idle}
}

// tlsPlainConn is the decrypted stream of a TLS connection: it reports
// what it reads and writes to the connection's httpstats.Conn (below the
// TLS layer), and its first byte read to proxy.max_connections.
type tlsPlainConn struct {
	*tls.Conn
	hs    *httpstats.Conn
	heard atomic.Bool
}

// NetConn returns the TLS connection.
func (c *tlsPlainConn) NetConn() net.Conn { return c.Conn }

func (c *tlsPlainConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.heard.Load() && c.heard.CompareAndSwap(false, true) {
		heard(c.Conn)
	}
	if c.hs != nil {
		c.hs.PlainRead(n, err)
	}
	return n, err
}

func (c *tlsPlainConn) Write(p []byte) (int, error) {
	if c.hs != nil {
		c.hs.PlainWrite(p)
	}
	return c.Conn.Write(p)
}

// tlsStateKey carries the TLS state of an HTTP/1.1 connection that the
// server sees through a tlsPlainConn (net/http sets Request.TLS only for
// a *tls.Conn).
type tlsStateKey struct{}

// tlsConnContext is the server's ConnContext: it keeps the TLS state for
// tlsRequest.
func tlsConnContext(ctx context.Context, nc net.Conn) context.Context {
	if hc, ok := nc.(*headerConn); ok {
		if pc, ok := hc.Conn.(*tlsPlainConn); ok {
			st := pc.ConnectionState()
			return context.WithValue(ctx, tlsStateKey{}, &st)
		}
	}
	return ctx
}
