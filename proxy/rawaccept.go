package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/httpstats"
)

// The own loop's accept. Go's net package makes two system calls on every
// TCP connection it accepts that nginx does not: getsockname (for
// LocalAddr) and setsockopt(TCP_NODELAY). A listener whose server runs the
// own loop accepts with accept4 on the listening socket instead, waiting
// through the netpoller, and wraps the descriptor in an *os.File (one
// fcntl, and the netpoller's registration). The local address is the
// listener's when it is not a wildcard, else getsockname, and only when
// accounting needs it; TCP_NODELAY is set as nginx sets it, before the
// connection's second write (its next response, or more of a large one):
// a connection that carries one response in one write never needs it.
// What the loop hands to net/http (an unusual request, a server that no
// longer runs the own loop) becomes a *net.TCPConn first (net.FileConn),
// so net/http serves exactly what it serves without the loop.

// rawListener accepts on a listening socket with accept4. The net
// package's RawConn of a listener cannot wait (its Read is EINVAL): the
// socket is duplicated into an *os.File, whose RawConn waits through the
// netpoller. Closing the listener closes both.
type rawListener struct {
	f  *os.File // the duplicate
	rc syscall.RawConn
	// local is the accepted connections' local address when the socket
	// is bound to one address (no zone); invalid: ask each connection.
	local netip.AddrPort
}

// newRawListener returns nil when sock is not a TCP listener.
func newRawListener(sock net.Listener) *rawListener {
	tl, ok := sock.(*net.TCPListener)
	if !ok {
		return nil
	}
	lrc, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	dfd := -1
	lrc.Control(func(fd uintptr) { dfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil || dfd < 0 {
		return nil
	}
	f := os.NewFile(uintptr(dfd), "listener") // non-blocking, as tl's: pollable
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil
	}
	r := &rawListener{f: f, rc: rc}
	if ta, ok := tl.Addr().(*net.TCPAddr); ok {
		if ap := ta.AddrPort(); ap.Addr().IsValid() && !ap.Addr().IsUnspecified() && ap.Addr().Zone() == "" {
			r.local = ap
		}
	}
	return r
}

// accept returns the next connection's non-blocking descriptor and remote
// address.
func (r *rawListener) accept() (int, netip.AddrPort, error) {
	var (
		nfd  int
		sa   syscall.Sockaddr
		aerr error
	)
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			// syscall's, not x/sys/unix's: unix.Accept4 asks the socket's
			// protocol (getsockopt SO_PROTOCOL, for L2TP) on every IPv4
			// or IPv6 address it converts.
			nfd, sa, aerr = syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			switch aerr {
			case syscall.EINTR, syscall.ECONNABORTED: // as Go's accept
				continue
			case syscall.EAGAIN:
				return false
			}
			return true
		}
	})
	if err != nil {
		return -1, netip.AddrPort{}, netClosed(err)
	}
	if aerr != nil {
		return -1, netip.AddrPort{}, os.NewSyscallError("accept4", aerr)
	}
	return nfd, sockaddrAddrPort(sa), nil
}

// closeSocket closes the listening socket (and its duplicate).
func (l *listener) closeSocket() {
	l.sock.Close()
	if l.raw != nil {
		l.raw.f.Close()
	}
}

// sockaddrAddrPort is what net.TCPAddr.AddrPort gives for sa.
func sockaddrAddrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a = a.WithZone(ifi.Name)
			} else {
				a = a.WithZone(strconv.Itoa(int(sa.ZoneId)))
			}
		}
		return netip.AddrPortFrom(a, uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// localAddrPort is getsockname's address of fd (syscall's Getsockname:
// x/sys/unix's adds a getsockopt, see accept).
func localAddrPort(fd int) netip.AddrPort {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}
	}
	return sockaddrAddrPort(sa)
}

// acceptOwn accepts the next connection for the own loop: attributed and
// counted (when the proxy counts) like the listener's own Accept does.
func (l *listener) acceptOwn(p *Proxy) (net.Conn, error) {
	fd, remote, err := l.raw.accept()
	if err != nil {
		return nil, err
	}
	fc := &fileConn{local: l.raw.local, remote: remote}
	var hc *httpstats.Conn
	if p.stats != nil {
		local := fc.local
		if !local.IsValid() {
			local = localAddrPort(fd)
			fc.local = local
		}
		info := p.deps.Attributor.Attribute(fd, local, remote)
		fc.f = os.NewFile(uintptr(fd), "")
		hc = p.stats.WrapInfo(fc, info)
	} else {
		fc.f = os.NewFile(uintptr(fd), "")
	}
	if s := l.cur.Load(); s == nil || !s.settings.ownLoop {
		// Reloaded meanwhile: net/http's connection, as its Accept gives it.
		tc, err := fc.toTCP()
		if err != nil {
			if hc != nil {
				hc.Close() // ends it in the series
			}
			return nil, err
		}
		if hc != nil {
			hc.Conn = tc
			return hc, nil
		}
		return tc, nil
	}
	if hc != nil {
		return hc, nil
	}
	return fc, nil
}

// fileConn is a connection accepted by rawListener.
type fileConn struct {
	f      *os.File
	local  netip.AddrPort // invalid: not asked yet
	remote netip.AddrPort
}

// toTCP makes the connection a *net.TCPConn (a duplicate descriptor; f is
// closed), with what Go's accept and the listener's settings give it:
// TCP_NODELAY, no keep-alive probes.
func (c *fileConn) toTCP() (*net.TCPConn, error) {
	nc, err := net.FileConn(c.f)
	c.f.Close()
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, errors.New("accepted socket is not TCP")
	}
	tc.SetKeepAlive(false)
	return tc, nil
}

func (c *fileConn) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	return n, c.opError("read", err)
}

func (c *fileConn) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	return n, c.opError("write", err)
}

func (c *fileConn) Close() error { return c.opError("close", c.f.Close()) }

// opError makes f's errors what a *net.TCPConn returns.
func (c *fileConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, os.ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// LocalAddr: the listener's address, or getsockname's.
func (c *fileConn) LocalAddr() net.Addr {
	ap := c.local
	if !ap.IsValid() {
		rc, err := c.f.SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) { ap = localAddrPort(int(fd)) })
		}
	}
	return net.TCPAddrFromAddrPort(ap)
}

func (c *fileConn) RemoteAddr() net.Addr                  { return net.TCPAddrFromAddrPort(c.remote) }
func (c *fileConn) SetDeadline(t time.Time) error         { return c.f.SetDeadline(t) }
func (c *fileConn) SetReadDeadline(t time.Time) error     { return c.f.SetReadDeadline(t) }
func (c *fileConn) SetWriteDeadline(t time.Time) error    { return c.f.SetWriteDeadline(t) }
func (c *fileConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

// setNoDelay sets TCP_NODELAY on the socket under rc.
func setNoDelay(rc syscall.RawConn) {
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) })
}

// fileToTCP makes a connection accepted for the own loop a *net.TCPConn
// (fileConn.toTCP) when it goes to net/http after all; false: it is closed
// (evicted meanwhile, or the conversion failed).
func (c *limitedConn) fileToTCP() bool {
	inner := c.Conn
	hc, _ := inner.(*httpstats.Conn)
	if hc != nil {
		inner = hc.Conn
	}
	fc, ok := inner.(*fileConn)
	if !ok {
		return true
	}
	// Under the limit's lock: an eviction either happened before (gone)
	// or closes the connection it finds after.
	c.l.mu.Lock()
	if c.gone {
		c.l.mu.Unlock()
		return false
	}
	tc, err := fc.toTCP()
	if err == nil {
		if hc != nil {
			hc.Conn = tc
		} else {
			c.Conn = tc
		}
	}
	c.l.mu.Unlock()
	if err != nil {
		c.Close()
		return false
	}
	return true
}
