package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The own loop's connections as a set: drain, the watchdog for clients
// that leave while the upstream works, and the hand-off to net/http.

// ownConns are the connections a server's own loop serves (for drain).
type ownConns struct {
	mu      sync.Mutex
	conns   map[*h1conn]struct{}
	closing atomic.Bool
	done    chan struct{} // closed when closing and empty

	watchOnce sync.Once
	stop      chan struct{} // closed by shutdown: ends watch
}

// watchEvery is how often the watchdog looks for clients that left while
// their request waits for the upstream's response.
const watchEvery = 250 * time.Millisecond

// watch ends the wait of requests whose client has gone (closed or reset
// its connection) while the upstream works on them, as nginx does: the
// upstream connection is closed and the request recorded as 499. A
// request is checked (one non-blocking peek at the client's socket) once
// it has waited for at least one period, so the loop pays nothing for it
// per request but two atomic operations.
func (o *ownConns) watch() {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
		}
		o.mu.Lock()
		for c := range o.conns {
			uc := c.waiting.Load()
			if uc == nil || uc != c.seen {
				c.seen = uc
				continue
			}
			if peekGone(c.tcp) && c.waiting.CompareAndSwap(uc, nil) {
				uc.c.SetReadDeadline(time.Now())
			}
		}
		o.mu.Unlock()
	}
}

func (o *ownConns) add(c *h1conn) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closing.Load() {
		return false
	}
	if o.conns == nil {
		o.conns = map[*h1conn]struct{}{}
		o.stop = make(chan struct{})
	}
	o.conns[c] = struct{}{}
	return true
}

func (o *ownConns) remove(c *h1conn) {
	o.mu.Lock()
	delete(o.conns, c)
	if len(o.conns) == 0 && o.done != nil {
		close(o.done)
		o.done = nil
	}
	o.mu.Unlock()
}

// shutdown closes the idle connections; busy ones close after their
// response. The channel is closed when none is left.
func (o *ownConns) shutdown() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	done := make(chan struct{})
	if !o.closing.Swap(true) && o.stop != nil {
		close(o.stop)
	}
	if len(o.conns) == 0 {
		close(done)
		return done
	}
	o.done = done
	for c := range o.conns {
		if c.state.CompareAndSwap(h1Idle, h1Closing) {
			c.tcp.SetReadDeadline(time.Now())
		}
	}
	return done
}

// closeAll closes every connection (the drain timeout passed).
func (o *ownConns) closeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for c := range o.conns {
		c.tcp.Close()
	}
}

// handOff gives the connection, with the bytes read and not yet served,
// to the listener's net/http server. The bytes are put below the counting
// layer (httpstats.Conn), so that net/http's reads count them as today.
func (c *h1conn) handOff() {
	if c.hc != nil {
		c.series().AddReading(-1)
	}
	if _, ok := c.tcp.(*fileConn); ok {
		// Accepted by the loop: net/http gets a *net.TCPConn, with
		// TCP_NODELAY, as without the loop.
		if !c.lc.fileToTCP() {
			return
		}
	} else {
		// The loop's deadline is net/http's to set from here.
		c.tcp.SetReadDeadline(time.Time{})
	}
	pre := append([]byte(nil), c.buf[c.off:c.end]...)
	if c.hc != nil {
		c.hc.Conn = &prefixConn{Conn: c.hc.Conn, pre: pre}
	} else {
		c.lc.Conn = &prefixConn{Conn: c.lc.Conn, pre: pre}
	}
	for {
		s := c.l.cur.Load()
		if s == nil {
			c.lc.Close()
			return
		}
		select {
		case s.q.ch <- c.lc:
			return
		case <-s.q.done:
			if c.l.cur.Load() == s {
				c.lc.Close()
				return
			}
		}
	}
}

// prefixConn returns pre before reading from the connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) NetConn() net.Conn { return c.Conn }

// markHeard: the connection sent a byte (connLimit no longer evicts it).
func (c *limitedConn) markHeard() {
	if !c.heard.Load() && c.heard.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		delete(c.l.quiet, c)
		c.l.mu.Unlock()
	}
}

// peekGone: one non-blocking MSG_PEEK on the client's socket.
func peekGone(tcp syscall.Conn) bool {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	var b [1]byte
	// Control, not Read: the peek must work past the read deadline.
	rc.Control(func(fd uintptr) {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		gone = n == 0 && err == nil || err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR)
	})
	return gone
}
