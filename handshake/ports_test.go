package handshake

import (
	"net"
	"runtime"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestListeningPortsDiag: in a network namespace of its own, sock_diag
// lists exactly the listening ports (IPv4 and IPv6), not the ports of
// connected sockets, and agrees with /proc/net/tcp.
func TestListeningPortsDiag(t *testing.T) {
	testenv.RequireRoot(t)
	type result struct {
		want, diag, proc []uint16
		err              error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var r result
		defer func() { done <- r }()
		if r.err = unix.Unshare(unix.CLONE_NEWNET); r.err != nil {
			return
		}
		for _, nw := range []string{"tcp4", "tcp6", "tcp4"} {
			ln, err := net.Listen(nw, ":0")
			if err != nil {
				r.err = err
				return
			}
			defer ln.Close()
			r.want = append(r.want, uint16(ln.Addr().(*net.TCPAddr).Port))
		}
		// A connection: its two ends are not listeners.
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			r.err = err
			return
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			r.err = err
			return
		}
		defer ln.Close()
		r.want = append(r.want, uint16(ln.Addr().(*net.TCPAddr).Port))
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			r.err = err
			return
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			r.err = err
			return
		}
		defer s.Close()
		if r.diag, r.err = diagListening(); r.err != nil {
			return
		}
		r.proc, r.err = procListening()
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, s := range [][]uint16{r.want, r.diag, r.proc} {
		slices.Sort(s)
	}
	if !slices.Equal(r.diag, r.want) || !slices.Equal(r.proc, r.want) {
		t.Errorf("sock_diag %v, /proc/net/tcp %v; want the listeners %v", r.diag, r.proc, r.want)
	}
}
