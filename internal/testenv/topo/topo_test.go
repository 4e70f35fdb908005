package topo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const ioTimeout = 3 * time.Second

// TestMain fails the run if any namespace this binary created survived.
func TestMain(m *testing.M) {
	code := m.Run()
	if left := leftoverNamespaces(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "leftover network namespaces: %v\n", left)
		code = 1
	}
	os.Exit(code)
}

func leftoverNamespaces() []string {
	created := createdNames()
	if len(created) == 0 {
		return nil
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	var left []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && created[f[0]] {
			left = append(left, f[0])
		}
	}
	return left
}

type accepted struct {
	c       net.Conn
	ifindex uint32
	err     error
}

// listen starts a pktinfo-enabled listener in srv and an accept loop that
// reports each connection with its ingress ifindex. The returned stop
// closes the listener and waits until the accept loop let go of it: Go
// closes the socket only when the blocked Accept returns, and until then a
// new listener on the same port gets EADDRINUSE. Cleanup calls stop too.
//
// MPTCP is disabled: Go listeners default to MPTCP, and the kernel's MPTCP
// socket rejects IP_PKTINFO (see TestMPTCPListenerPktinfo).
func listen(t *testing.T, ns *NS, addr string, control func(string, string, syscall.RawConn) error) (stop func(), _ <-chan accepted) {
	t.Helper()
	lc := net.ListenConfig{Control: control}
	lc.SetMultipathTCP(false)
	l, err := ns.ListenWith(context.Background(), &lc, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan accepted, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			idx, err := ingressIfindex(c)
			ch <- accepted{c, idx, err}
		}
	}()
	stop = func() {
		l.Close()
		select {
		case <-done:
		case <-time.After(ioTimeout):
			t.Errorf("accept loop on %s did not stop", addr)
		}
		for a := range ch { // close what nobody picked up
			a.c.Close()
		}
	}
	t.Cleanup(stop)
	return stop, ch
}

// connect dials vip:port from ns, expects the connection on ch with the
// given ingress ifindex, and exchanges a byte each way.
func connect(t *testing.T, from *NS, vip netip.Addr, port int, ch <-chan accepted, wantIdx uint32, wantDev string) {
	t.Helper()
	connectFrom(t, from, "", vip, port, ch, wantIdx, wantDev)
}

// connectFrom is connect with the client's local address bound to laddr.
func connectFrom(t *testing.T, from *NS, laddr string, vip netip.Addr, port int, ch <-chan accepted, wantIdx uint32, wantDev string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, err := from.DialFrom(ctx, "tcp", laddr, netip.AddrPortFrom(vip, uint16(port)).String())
	if err != nil {
		t.Fatalf("dial %s:%d from %s: %v", vip, port, from.Name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	var a accepted
	select {
	case a = <-ch:
	case <-time.After(ioTimeout):
		t.Fatalf("connection from %s to %s not accepted", from.Name, vip)
	}
	defer a.c.Close()
	if a.err != nil {
		t.Fatalf("ingress ifindex: %v", a.err)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := a.c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if local.Addr().Unmap() != remote.Addr().Unmap() || local.Port() != remote.Port() {
		t.Fatalf("accepted connection from %s, dialed from %s", remote, local)
	}
	want := from.V4
	if vip.Is6() {
		want = from.V6
	}
	if local.Addr().Unmap() != want {
		t.Errorf("source address %s, want %s", local.Addr(), want)
	}
	if got := a.c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != vip {
		t.Errorf("accepted on %s, want %s", got, vip)
	}
	if a.ifindex != wantIdx {
		t.Errorf("%s -> %s: ingress ifindex %d, want %d (%s)", from.Name, vip, a.ifindex, wantIdx, wantDev)
	}
	a.c.SetDeadline(time.Now().Add(ioTimeout))
	b := []byte{0}
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a.c, b); err != nil {
		t.Fatalf("server read: %v", err)
	}
	if _, err := a.c.Write(b); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("client read %q: %v", b, err)
	}
}

func TestReachability(t *testing.T) {
	t.Parallel()
	tp := New(t)
	port := tp.Srv.FreePort(t)
	_, ch := listen(t, tp.Srv, "[::]:"+strconv.Itoa(port), pktinfoControl)
	for _, c := range []struct {
		ns  *NS
		dev string
	}{{tp.C1, "eth1"}, {tp.C2, "eth2"}, {tp.LB, "tun0"}, {tp.C4, "mv0"}, {tp.Client, "tun0"}} {
		idx := tp.Srv.Ifindex(t, c.dev)
		for _, vip := range []netip.Addr{tp.VIP4, tp.VIP6} {
			t.Run(c.ns.Role()+"/"+vip.String(), func(t *testing.T) {
				connect(t, c.ns, vip, port, ch, idx, c.dev)
			})
		}
	}
	// NS.Dial as http.Transport's dialer; the server is plain net/http.
	t.Run("c1/http", func(t *testing.T) {
		l, err := tp.Srv.Listen("tcp", netip.AddrPortFrom(tp.VIP6, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.RemoteAddr)
		}))
		srv.Listener = l
		srv.Start()
		defer srv.Close()
		tr := &http.Transport{DialContext: tp.C1.Dial}
		defer tr.CloseIdleConnections()
		cl := &http.Client{Transport: tr, Timeout: ioTimeout}
		resp, err := cl.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if ap, err := netip.ParseAddrPort(string(b)); err != nil || ap.Addr() != tp.C1.V6 {
			t.Errorf("server saw client %q, want %s", b, tp.C1.V6)
		}
	})
	// DialFrom with an explicit source (IPv6 socket, v4-mapped address).
	t.Run("c1/DialFrom", func(t *testing.T) {
		laddr := "[::ffff:" + tp.C1.V4.String() + "]:0"
		connectFrom(t, tp.C1, laddr, tp.VIP4, port, ch, tp.Srv.Ifindex(t, "eth1"), "eth1")
	})
}

func TestDSR(t *testing.T) {
	t.Parallel()
	tp := New(t)
	tun0 := tp.Srv.Ifindex(t, "tun0")

	// Replies to cl leave srv via eth5, except for sockets bound to tun0.
	for _, c := range []struct{ vip, cl netip.Addr }{{tp.VIP4, tp.Client.V4}, {tp.VIP6, tp.Client.V6}} {
		out := tp.Srv.Out(t, "route", "get", c.cl.String(), "from", c.vip.String())
		if !strings.Contains(out, " dev eth5 ") || strings.Contains(out, "tun0") {
			t.Errorf("srv route to %s from %s: %q, want via eth5", c.cl, c.vip, out)
		}
		// Without "from", an IPv6 oif is strict, as for a bound socket.
		out = tp.Srv.Out(t, "route", "get", c.cl.String(), "oif", "tun0")
		if !strings.Contains(out, " dev tun0 ") {
			t.Errorf("srv route to %s oif tun0: %q, want via tun0", c.cl, out)
		}
	}
	// Make sure srv and lb know each other's tun0 MAC before counting.
	if err := Probe(tp.LB, tp.Srv, tp.SrvAddr["tun0"].V4, ioTimeout); err != nil {
		t.Fatal(err)
	}
	if err := Probe(tp.LB, tp.Srv, tp.SrvAddr["tun0"].V6, ioTimeout); err != nil {
		t.Fatal(err)
	}

	for _, vip := range []netip.Addr{tp.VIP4, tp.VIP6} {
		t.Run(vip.String(), func(t *testing.T) {
			port := tp.Srv.FreePort(t)
			addr := netip.AddrPortFrom(vip, uint16(port)).String()

			// Positive control: the plain listener gets cl's connection
			// over tun0 and the SYN-ACK reaches cl via eth5.
			stop, ch := listen(t, tp.Srv, addr, pktinfoControl)
			connect(t, tp.Client, vip, port, ch, tun0, "tun0")
			stop()

			// Negative control: the same listener bound to tun0. Its
			// SYN-ACK goes into the tunnel and lb drops it.
			bind := func(network, address string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), "tun0") })
				if err == nil {
					err = serr
				}
				if err == nil {
					err = pktinfoControl(network, address, rc)
				}
				return err
			}
			_, ch = listen(t, tp.Srv, addr, bind)
			srvRx0, srvTx0 := tp.Srv.LinkPackets(t, "tun0")
			lbRx0, _ := tp.LB.LinkPackets(t, "tun0")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			c, err := tp.Client.Dial(ctx, "tcp", addr)
			if err == nil {
				c.Close()
				t.Fatal("connection to a tun0-bound listener succeeded; DSR replies went back through the tunnel?")
			}
			if !errors.Is(err, context.DeadlineExceeded) && !os.IsTimeout(err) {
				t.Fatalf("dial failed for the wrong reason: %v (want a timeout)", err)
			}
			select {
			case a := <-ch:
				t.Fatalf("tun0-bound listener accepted %v", a.c.RemoteAddr())
			default:
			}
			// The listener did answer: a request socket waits in SYN-RECV...
			cmdCtx, cmdCancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cmdCancel()
			out, err := tp.Srv.Exec(cmdCtx, "ss", "-Htn", "state", "syn-recv", "sport", "=", ":"+strconv.Itoa(port)).CombinedOutput()
			if err != nil || !strings.Contains(string(out), tp.Client.V4.String()) && !strings.Contains(string(out), tp.Client.V6.String()) {
				t.Errorf("no SYN-RECV request socket for %s in srv: %v %q", tp.Client.Name, err, out)
			}
			// ...and its SYN-ACK (plus a retransmission after 1 s) went out
			// of srv's tun0 and into lb's, which dropped it.
			srvRx1, srvTx1 := tp.Srv.LinkPackets(t, "tun0")
			lbRx1, _ := tp.LB.LinkPackets(t, "tun0")
			if srvRx1-srvRx0 < 2 || srvTx1-srvTx0 < 2 || lbRx1-lbRx0 < 2 {
				t.Errorf("tun0 packets: srv rx +%d tx +%d, lb rx +%d; want SYNs in and SYN-ACKs out (>= 2 each)",
					srvRx1-srvRx0, srvTx1-srvTx0, lbRx1-lbRx0)
			}
		})
	}
}

func TestRecreateTunnel(t *testing.T) {
	t.Parallel()
	tp := New(t)
	old := tp.Srv.Ifindex(t, "tun0")
	tp.RecreateTunnel(t)
	idx := tp.Srv.Ifindex(t, "tun0")
	if idx == old {
		t.Fatalf("tun0 ifindex unchanged (%d)", idx)
	}
	port := tp.Srv.FreePort(t)
	_, ch := listen(t, tp.Srv, "[::]:"+strconv.Itoa(port), pktinfoControl)
	for _, from := range []*NS{tp.LB, tp.Client} {
		for _, vip := range []netip.Addr{tp.VIP4, tp.VIP6} {
			connect(t, from, vip, port, ch, idx, "new tun0")
		}
	}
}

// TestMPTCPListenerPktinfo documents (logs) why NS.Listen and the tests
// disable MPTCP: Go's default listener is MPTCP where the kernel has it, and
// on Linux 6.x IP_PKTINFO cannot be set on an MPTCP socket. ipng-stats' own
// listeners must take this into account.
func TestMPTCPListenerPktinfo(t *testing.T) {
	t.Parallel()
	tp := New(t)
	l, err := tp.Srv.ListenWith(context.Background(), &net.ListenConfig{}, "tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var proto int
	rc.Control(func(fd uintptr) { proto, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if err != nil {
		t.Fatal(err)
	}
	perr := pktinfoControl("tcp", "", rc)
	t.Logf("default Go listener: protocol %d (MPTCP=%d), IP_PKTINFO/IPV6_RECVPKTINFO: %v", proto, unix.IPPROTO_MPTCP, perr)
}

func TestCleanupLeavesNothing(t *testing.T) {
	t.Parallel()
	// Nothing is ever created in the root namespace. Other processes may
	// add links there meanwhile, so only names ours could have count.
	rootLinks := func() map[string]bool {
		out, err := exec.Command("ip", "-br", "link").CombinedOutput()
		if err != nil {
			t.Fatalf("ip link: %v: %s", err, out)
		}
		m := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				m[strings.Split(f[0], "@")[0]] = true
			}
		}
		return m
	}
	linksBefore := rootLinks()
	var names []string
	var cgPath string
	waited := make(chan error, 1)
	t.Run("build", func(t *testing.T) {
		tp := New(t)
		for _, ns := range tp.All() {
			names = append(names, ns.Name)
		}
		cg := NewCgroup(t)
		cgPath = cg.Path
		cmd := tp.Srv.Exec(context.Background(), "sleep", "60")
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		go func() { waited <- cmd.Wait() }()
		// The process is in the cgroup from the start, and (once nsenter
		// has exec'd sleep) in srv's network namespace.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
		if err != nil || !strings.Contains(string(b), "0::/"+filepath.Base(cg.Path)+"\n") {
			t.Errorf("process cgroups %q (%v), want %s", b, err, cg.Path)
		}
		var want, got unix.Stat_t
		if err := unix.Stat(tp.Srv.Path, &want); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(ioTimeout); ; time.Sleep(10 * time.Millisecond) {
			err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &got)
			if err == nil && got.Ino == want.Ino {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process not in srv's netns (ino %d, want %d): %v", got.Ino, want.Ino, err)
			}
		}
	})
	// The subtest's cleanups have run now.
	select {
	case err := <-waited:
		if err == nil {
			t.Error("sleep exited cleanly; want killed by the cgroup cleanup")
		}
	case <-time.After(5 * time.Second):
		t.Error("process in the cgroup survived its cleanup")
	}
	if _, err := os.Stat(cgPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s still exists: %v", cgPath, err)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s survived cleanup", n)
		}
	}
	for name := range rootLinks() {
		if !linksBefore[name] && strings.ContainsAny(name, "0123456789") &&
			(strings.HasPrefix(name, "eth") || name == "tun0" || name == "mv0") {
			t.Errorf("new link %s in the root namespace", name)
		}
	}
}
