package attribution

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Listener wraps a TCP listener so that every connection it accepts is
// attributed once, at accept. Use it with any net/http server:
//
//	al, _ := attribution.Listen(ctx, "tcp", ":80", attributor)
//	http.Serve(al, handler) // handlers: attribution.InfoOf(conn) via ConnContext
type Listener struct {
	*net.TCPListener
	a *Attributor
}

// Listen creates a plain TCP listener (never bound to a device, never
// MPTCP) and wraps it. An address without a host ("[::]:80" or ":80")
// listens on both families.
func Listen(ctx context.Context, network, address string, a *Attributor) (*Listener, error) {
	var lc net.ListenConfig
	// Go ≥ 1.24 listens with MPTCP by default; an MPTCP listener accepts
	// no IP_PKTINFO and hands out MPTCP sockets that carry no stamp.
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	al, err := NewListener(l, a)
	if err != nil {
		l.Close()
		return nil, err
	}
	return al, nil
}

// NewListener wraps l, which must be a plain TCP *net.TCPListener, and
// readies its socket for the pktinfo method when the Attributor uses it.
func NewListener(l net.Listener, a *Attributor) (*Listener, error) {
	tl, ok := l.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("attribution needs a TCP listener, got %T", l)
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener socket: %w", err)
	}
	var perr error
	if err := rc.Control(func(fd uintptr) {
		if proto, _ := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL); proto == unix.IPPROTO_MPTCP {
			perr = errors.New("it is an MPTCP socket (Go's default since 1.24): create it with attribution.Listen, or a net.ListenConfig after SetMultipathTCP(false)")
			return
		}
		perr = a.PrepareListener(int(fd))
	}); err != nil {
		return nil, fmt.Errorf("listener socket: %w", err)
	}
	if perr != nil {
		return nil, fmt.Errorf("preparing listener %s: %w", tl.Addr(), perr)
	}
	return &Listener{TCPListener: tl, a: a}, nil
}

// Accept waits for a connection and returns it as a *Conn carrying its Info.
// A connection that cannot be attributed because it is already gone is
// dropped, and Accept waits for the next one: http.Serve ends on the first
// error Accept returns.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.TCPListener.AcceptTCP()
		if err != nil {
			return nil, err
		}
		if conn, err := l.a.AttributeConn(c); err == nil {
			return conn, nil
		}
	}
}

// Conn is an accepted connection with its attribution. It embeds the
// *net.TCPConn so that sendfile/splice fast paths keep working.
type Conn struct {
	*net.TCPConn
	info Info
}

// Info returns the connection's attribution.
func (c *Conn) Info() Info { return c.info }

// AttributeConn attributes an accepted connection (for servers that accept
// on their own).
func (a *Attributor) AttributeConn(c *net.TCPConn) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("accepted socket: %w", err)
	}
	la, lok := c.LocalAddr().(*net.TCPAddr)
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		c.Close()
		return nil, fmt.Errorf("accepted socket has no TCP addresses")
	}
	local, remote := la.AddrPort(), ra.AddrPort()
	conn := &Conn{TCPConn: c}
	if err := rc.Control(func(fd uintptr) { conn.info = a.Attribute(int(fd), local, remote) }); err != nil {
		c.Close()
		return nil, fmt.Errorf("accepted socket: %w", err)
	}
	return conn, nil
}

// InfoOf returns the attribution of a connection accepted through a
// Listener, looking through wrappers such as *tls.Conn that expose NetConn.
func InfoOf(c net.Conn) (Info, bool) {
	for range 8 {
		switch v := c.(type) {
		case *Conn:
			return v.info, true
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return Info{}, false
		}
	}
	return Info{}, false
}
