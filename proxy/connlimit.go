package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxConnections bounds the client connections the proxy holds open
// at once over all its listeners (proxy.max_connections 0). Each costs a
// goroutine and buffers; nginx's equivalent is worker_connections.
const DefaultMaxConnections = 16384

// connLimit enforces proxy.max_connections. At the bound a new connection
// makes room by closing the one that has waited longest without sending a
// byte (evicted); when every open connection has sent something, the new
// one is closed (over_limit). A connection that is serving requests is
// never closed for another.
type connLimit struct {
	mu    sync.Mutex
	max   int
	open  int
	quiet map[*limitedConn]struct{} // open, not a byte received yet

	evicted, overLimit atomic.Uint64
}

func newConnLimit() *connLimit {
	return &connLimit{max: DefaultMaxConnections, quiet: map[*limitedConn]struct{}{}}
}

func (l *connLimit) setMax(n int) {
	if n <= 0 {
		n = DefaultMaxConnections
	}
	l.mu.Lock()
	l.max = n
	l.mu.Unlock()
}

// admit wraps c, making room for it, or closes it and returns nil.
func (l *connLimit) admit(c net.Conn) net.Conn {
	lc := &limitedConn{Conn: c, l: l, since: time.Now()}
	l.mu.Lock()
	var victim *limitedConn
	if l.open >= l.max {
		for q := range l.quiet {
			if victim == nil || q.since.Before(victim.since) {
				victim = q
			}
		}
		if victim == nil {
			l.mu.Unlock()
			l.overLimit.Add(1)
			c.Close()
			return nil
		}
		// Counted as closed now: the new one takes its place.
		delete(l.quiet, victim)
		victim.gone = true
		l.open--
	}
	l.open++
	l.quiet[lc] = struct{}{}
	l.mu.Unlock()
	if victim != nil {
		l.evicted.Add(1)
		victim.Conn.Close()
	}
	return lc
}

func (l *connLimit) openNow() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// limitedConn is an admitted client connection.
type limitedConn struct {
	net.Conn
	l     *connLimit
	since time.Time
	heard atomic.Bool // a byte was received
	// viaTLS: heard from the first byte of HTTP after the TLS handshake
	// (hear), not from the ClientHello. Set before the first read.
	viaTLS bool
	// h2Idle: net/http's HTTP/2 server has read the preface and reported
	// the connection idle (h2ConnState); its next StateActive is a stream.
	h2Idle atomic.Bool
	gone   bool // closed or evicted (l.mu)
}

// NetConn returns the wrapped connection (httpstats and attribution look
// through it).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.viaTLS {
		c.hear()
	}
	return n, err
}

// hear takes c out of the connections that can be evicted.
func (c *limitedConn) hear() {
	if !c.heard.Load() && c.heard.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		delete(c.l.quiet, c)
		c.l.mu.Unlock()
	}
}

func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	if !c.gone {
		c.gone = true
		c.l.open--
		delete(c.l.quiet, c)
	}
	c.l.mu.Unlock()
	return c.Conn.Close()
}
