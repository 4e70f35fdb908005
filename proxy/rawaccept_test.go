package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// ownConnOf returns the one connection the listener's own loop serves.
func ownConnOf(t *testing.T, p *Proxy, addr string) *h1conn {
	t.Helper()
	var c *h1conn
	testenv.Eventually(t, 10*time.Second, func() bool {
		p.mu.Lock()
		s := p.listeners[addr].cur.Load()
		p.mu.Unlock()
		s.own.mu.Lock()
		defer s.own.mu.Unlock()
		for k := range s.own.conns {
			c = k
		}
		return len(s.own.conns) == 1
	}, "one own-loop connection")
	return c
}

// noDelay reads TCP_NODELAY of the proxy's side of c.
func noDelay(t *testing.T, c *h1conn) int {
	t.Helper()
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v := -1
	rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY) })
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOwnAccept: a listener whose server runs the own loop accepts with
// accept4 itself (no getsockname, no TCP_NODELAY at accept). The
// connection is attributed and counted with the listener's address as its
// VIP, or getsockname's when the listener has no single address; TCP_NODELAY
// is off after the connection's first response and on after its second, as
// nginx sets it.
func TestOwnAccept(t *testing.T) {
	for _, local := range []string{"listener", "getsockname"} {
		t.Run(local, func(t *testing.T) {
			deps := newDeps(t)
			be := newBackend(t, "a")
			addr := freeAddr(t)
			p, err := New(config.ProxyConfig{
				Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
				Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
				HTTP1Loop: "own",
			}, deps)
			if err != nil {
				t.Fatal(err)
			}
			l := p.listeners[addr]
			if l.raw == nil {
				t.Fatal("no raw listener")
			}
			if want := netip.MustParseAddrPort(addr); l.raw.local != want {
				t.Fatalf("listener's local address %v, want %v", l.raw.local, want)
			}
			if local == "getsockname" {
				l.raw.local = netip.AddrPort{} // as on a wildcard listener
			}
			running(t, p)
			c, br := dialRaw(t, addr)
			io.WriteString(c, "GET /status/200 HTTP/1.1\r\nHost: h\r\n\r\n")
			if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
				t.Fatalf("first: %d", resp.StatusCode)
			}
			hc := ownConnOf(t, p, addr)
			fc, ok := hc.tcp.(*fileConn)
			if !ok {
				t.Fatalf("connection accepted as %T, want *fileConn", hc.tcp)
			}
			if got := fc.RemoteAddr().String(); got != c.LocalAddr().String() {
				t.Errorf("remote address %s, want %s", got, c.LocalAddr())
			}
			if got := fc.LocalAddr().String(); got != addr {
				t.Errorf("local address %s, want %s", got, addr)
			}
			if v := noDelay(t, hc); v != 0 {
				t.Errorf("TCP_NODELAY %d after the first response, want 0", v)
			}
			io.WriteString(c, "GET /status/201 HTTP/1.1\r\nHost: h\r\n\r\n")
			if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 201 {
				t.Fatalf("second: %d", resp.StatusCode)
			}
			if v := noDelay(t, hc); v != 1 {
				t.Errorf("TCP_NODELAY %d after the second response, want 1", v)
			}
			c.Close()
			waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 2})
		})
	}
}

// TestOwnAcceptReload: a reload from the own loop to net/http's (and back)
// while the accept loop waits in the own accept: the next connection is
// served by the new server, and counted.
func TestOwnAcceptReload(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	addr := freeAddr(t)
	cfg := config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
		HTTP1Loop: "own",
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	ask := func(want int) {
		t.Helper()
		c, br := dialRaw(t, addr)
		io.WriteString(c, "GET /status/200 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		if resp, _ := readResp(t, br, "GET"); resp.StatusCode != want {
			t.Fatalf("status %d, want %d", resp.StatusCode, want)
		}
		c.Close()
	}
	ask(200)
	for i, loop := range []string{"net_http", "own", "net_http"} {
		cfg.HTTP1Loop = loop
		if err := p.Reload(cfg); err != nil {
			t.Fatal(err)
		}
		ask(200)
		ask(200)
		waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": uint64(3 + 2*i)})
	}
}

// TestNetClosedClosedFile: the own accept and the raw reads and writes go
// through a closed *os.File's SyscallConn when the listener or the
// connection is closed under them (drain, reload, eviction). That says
// "use of closed file", not os.ErrClosed; both must read as net.ErrClosed,
// or the accept loop logs "accept failed" and retries, and a client's
// closed connection is counted as 400 instead of 499.
func TestNetClosedClosedFile(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	rawErr := rc.Read(func(uintptr) bool { return true })
	_, readErr := r.Read(make([]byte, 1))
	for what, err := range map[string]error{"SyscallConn.Read": rawErr, "Read": readErr} {
		if err == nil {
			t.Fatalf("%s on a closed file: no error", what)
		}
		if got := netClosed(err); !errors.Is(got, net.ErrClosed) {
			t.Errorf("%s on a closed file: netClosed(%v) = %v, want net.ErrClosed", what, err, got)
		}
	}
	if other := errors.New("use of closed file"); netClosed(other) != other {
		t.Errorf("an unrelated error with the same text was taken for a closed file")
	}
}
