package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultKeepaliveTimeout is how long an idle upstream connection is kept
// for reuse (proxy.upstreams[].keepalive_timeout): below the idle timeouts
// of common backends (Apache and Node.js 5 s, nginx 75 s), so that the
// proxy, not the backend, closes it. Shorter ones (gunicorn's 2 s) are
// caught by the check before reuse and by the retry on a new connection.
const DefaultKeepaliveTimeout = 4 * time.Second

// upConn is an idle-able upstream connection of the fast path. It counts
// the bytes that went each way, so that a failure can tell whether anything
// of the request left or anything of the response arrived.
type upConn struct {
	c         net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	deadline  time.Time // read deadline set on c
	idleSince time.Time // when it was put back in the pool
	read      int64     // bytes read from c
	written   int64     // bytes written to c
	spoilt    bool      // the upstream sent bytes after a response
	raw       *rawConn  // c's system calls (the own loop's); nil: through c
}

func (uc *upConn) Read(p []byte) (int, error) {
	var (
		n   int
		err error
	)
	if uc.raw != nil {
		n, err = uc.raw.read(p)
	} else {
		n, err = uc.c.Read(p)
	}
	uc.read += int64(n)
	return n, err
}

func (uc *upConn) Write(p []byte) (int, error) { return uc.writev(p) }

// writev writes bufs in one writev.
func (uc *upConn) writev(bufs ...[]byte) (int, error) {
	var (
		n   int
		err error
	)
	if uc.raw != nil {
		n, err = uc.raw.writev(bufs...)
	} else {
		n, err = writeBuffers(uc.c, bufs)
	}
	uc.written += int64(n)
	return n, err
}

// arm makes sure a read on uc times out after between timeout and 1.5 ×
// timeout without data: the deadline is moved only when less than timeout
// is left, so that most requests set no timer at all.
func (uc *upConn) arm(timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	now := time.Now()
	if uc.deadline.Sub(now) < timeout {
		uc.deadline = now.Add(timeout + timeout/2)
		uc.c.SetReadDeadline(uc.deadline)
	}
}

// idleOK reports whether an idle connection can carry a request: nothing
// to read on it (one non-blocking peek). A server that closed it while it
// was idle has sent a FIN (or a RST), seen here before the request is
// written to it, as Go's Transport sees it with its background reader.
func (uc *upConn) idleOK() bool {
	sc, ok := uc.c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	ok = true
	var b [1]byte
	rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		// EAGAIN: nothing to read, as an idle connection should be. EOF
		// (n = 0, no error), a reset or unsolicited data: unusable.
		ok = errors.Is(err, unix.EAGAIN)
		return true
	})
	return ok
}

// upstreamConns keeps a backend's idle connections: a LIFO stack, so the
// oldest is at the bottom, bounded in number and in idle time.
type upstreamConns struct {
	addr      string
	dialer    *net.Dialer
	timeout   time.Duration // response headers
	keepalive time.Duration // idle time after which a connection is closed
	mu        sync.Mutex
	idle      []*upConn
}

const maxIdlePerBackend = 256

// get returns an idle connection that still looks usable (reused = true)
// or a new one. fresh skips the idle ones (a retry after a reused one
// failed).
func (u *upstreamConns) get(ctx context.Context, fresh bool) (uc *upConn, reused bool, err error) {
	for !fresh {
		uc, idle := u.pop()
		if uc == nil {
			break
		}
		if idle < idleCheckAfter || uc.idleOK() {
			return uc, true, nil
		}
		uc.c.Close()
	}
	c, err := u.dialer.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, false, err
	}
	uc = &upConn{c: c}
	uc.raw = newRawConn(c)
	uc.br = bufio.NewReaderSize(uc, 16<<10)
	uc.bw = bufio.NewWriterSize(uc, 8<<10)
	return uc, false, nil
}

// idleCheckAfter: a connection idle for less is reused without idleOK's
// system call. Backends close idle connections after seconds, not
// milliseconds, and under load connections are reused within microseconds,
// where the check would cost about one more system call per request; the
// rare backend that closes one sooner is covered by the retry.
const idleCheckAfter = 100 * time.Millisecond

// pop takes the most recently used idle connection that has not been idle
// for longer than keepalive, and says how long it was idle; expired ones
// are closed.
func (u *upstreamConns) pop() (*upConn, time.Duration) {
	u.mu.Lock()
	n := len(u.idle)
	if n == 0 {
		u.mu.Unlock()
		return nil, 0
	}
	uc := u.idle[n-1]
	u.idle = u.idle[:n-1]
	u.mu.Unlock()
	idle := time.Since(uc.idleSince)
	if idle < u.keepalive {
		return uc, idle
	}
	// The newest is expired: so are all below it.
	uc.c.Close()
	u.closeIdle()
	return nil, 0
}

func (u *upstreamConns) put(uc *upConn) {
	uc.idleSince = time.Now()
	uc.read, uc.written = 0, 0
	u.mu.Lock()
	if len(u.idle) < maxIdlePerBackend {
		u.idle = append(u.idle, uc)
		u.mu.Unlock()
		return
	}
	u.mu.Unlock()
	uc.c.Close()
}

// closeExpired closes the connections idle for keepalive or longer (the
// bottom of the stack).
func (u *upstreamConns) closeExpired(now time.Time) {
	u.mu.Lock()
	k := 0
	for k < len(u.idle) && now.Sub(u.idle[k].idleSince) >= u.keepalive {
		k++
	}
	expired := make([]*upConn, k)
	copy(expired, u.idle[:k])
	u.idle = append(u.idle[:0], u.idle[k:]...)
	u.mu.Unlock()
	for _, uc := range expired {
		uc.c.Close()
	}
}

func (u *upstreamConns) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle = nil
	u.mu.Unlock()
	for _, c := range idle {
		c.c.Close()
	}
}
