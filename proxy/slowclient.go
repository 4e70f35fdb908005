package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// response408 is what a client that did not send its request line and
// headers within timeouts.read_header gets. net/http itself closes such a
// connection without a word (or answers 400 when the timeout hits the
// request line); nginx logs 408 for it, and so do the proxy's counters.
const response408 = "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n408 Request Timeout"

// headerConn is a plaintext client connection that answers 408 when the
// server's read deadline passes while a request's first bytes have arrived
// but its headers have not. Whatever the server writes after that (its own
// 400) is dropped. active follows the server's ConnState: set from
// StateActive (headers read) to StateIdle (response done).
type headerConn struct {
	net.Conn
	active   atomic.Bool
	started  atomic.Bool // bytes of the next request have arrived
	answered atomic.Bool // 408 sent
	g        *gate       // strict parsing; nil on TLS connections
	served   atomic.Bool // a request head was read on this connection
	idle     *atomic.Uint64
}

// NetConn returns the wrapped connection (httpstats and attribution look
// through it).
func (c *headerConn) NetConn() net.Conn { return c.Conn }

func (c *headerConn) Read(p []byte) (int, error) {
	if c.g != nil {
		return c.readGated(p)
	}
	n, err := c.Conn.Read(p)
	if c.active.Load() {
		return n, err
	}
	if n > 0 {
		c.started.Store(true)
	}
	if err != nil && c.started.Load() {
		c.timeout(err)
	}
	return n, err
}

// timeout answers 408 when err is the read deadline passing while a
// request's head is being read.
func (c *headerConn) timeout(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) && c.answered.CompareAndSwap(false, true) {
		c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c.Conn, response408)
	}
}

func (c *headerConn) Write(p []byte) (int, error) {
	if c.answered.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the sendfile/splice path of the wrapped connection.
func (c *headerConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok && !c.answered.Load() {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c}, r)
}

// headerConnState is the http.Server ConnState hook that tells a
// headerConn where its request is.
func headerConnState(nc net.Conn, st http.ConnState) {
	if tc, ok := nc.(*tls.Conn); ok {
		h2ConnState(tc, st)
		return
	}
	c, ok := nc.(*headerConn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive:
		c.active.Store(true)
	case http.StateIdle:
		c.active.Store(false)
		c.started.Store(false)
	case http.StateHijacked:
		if c.g != nil {
			c.g.raw = true
		}
	}
}

// h2ConnState follows an HTTP/2 connection (the *tls.Conn net/http serves
// it on) for proxy.max_connections: it stays quiet, evictable at the bound,
// until its first stream. net/http's HTTP/2 server reports StateActive
// then StateIdle once it has read the preface, then StateActive when a
// stream opens: the first StateActive after a StateIdle is the first
// request. (Before the preface, and without one, nothing is reported.)
func h2ConnState(tc *tls.Conn, st http.ConnState) {
	lc := limitedOf(tc)
	if lc == nil {
		return
	}
	switch st {
	case http.StateIdle:
		lc.h2Idle.Store(true)
	case http.StateActive:
		if lc.h2Idle.Load() {
			lc.hear()
		}
	}
}
