package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// hsEnv is an env whose agent counts handshakes on the tag server's port
// (ports: empty means every listening port, which the healthy test uses).
func newHandshakeEnv(t *testing.T, ports string) *env {
	t.Helper()
	e := newEnv(t, "")
	if ports == "" {
		ports = strconv.Itoa(e.port)
	}
	yaml := bindingsYAML + fmt.Sprintf("handshakes:\n  ports: [%s]\n  ports_rescan_interval: 1s\n  diagnose_interval: 1s\n", ports)
	if ports == "all" {
		yaml = bindingsYAML + "handshakes:\n  ports_rescan_interval: 1s\n  diagnose_interval: 1s\n"
	}
	if err := os.WriteFile(e.cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// hsCounts are one series' handshake stages and connections, from the JSON.
type hsCounts struct {
	Syn, Synack, Wrong, Conns uint64
}

func (e *env) handshakes(t *testing.T) map[string]hsCounts {
	t.Helper()
	doc, err := e.statsDoc()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]hsCounts{}
	for _, s := range doc.Series {
		var c hsCounts
		if h := s.Handshakes; h != nil {
			c.Syn, c.Synack, c.Wrong = h.SynReceived, h.SynackSent, h.SynackWrongEgress
		}
		if s.Connections != nil {
			c.Conns = s.Connections.Total
		}
		if s.Handshakes != nil || s.Connections != nil {
			out[s.SourceTag+" "+s.VIP] = c
		}
	}
	return out
}

// synRetrans is how many SYNs ns retransmitted (TcpExt TCPSynRetrans).
func synRetrans(t *testing.T, ns *topo.NS) uint64 {
	t.Helper()
	var n uint64
	err := ns.Do(t, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/netstat")
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) == 0 || names[0] != "TcpExt:" {
				continue
			}
			for j := range names {
				if names[j] == "TCPSynRetrans" && j < len(vals) {
					n, err = strconv.ParseUint(vals[j], 10, 64)
					return err
				}
			}
		}
		return errors.New("no TcpExt TCPSynRetrans")
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// failDial tries to connect from the DSR client to the VIP and expects it
// to fail (the handshake cannot complete).
func (e *env) failDial(t *testing.T, port int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	c, err := e.topo.Client.Dial(ctx, "tcp4", netip.AddrPortFrom(e.topo.VIP4, uint16(port)).String())
	if err == nil {
		c.Close()
		t.Fatal("connection succeeded, want the handshake to fail")
	}
}

// TestHandshakesHealthyDSR: over the DSR path, every SYN that arrives on
// tun0 is answered and completes: SYNs received (less the client's own
// retransmissions) = SYN-ACKs sent = connections, none leave through tun0.
// The default port scope (every listener) is used.
func TestHandshakesHealthyDSR(t *testing.T) {
	e := newHandshakeEnv(t, "all")
	e.startTagServer("fallback") // listening before the agent reads the ports
	e.startAgent("--web.listen-address", "127.0.0.1:9113")
	r0 := synRetrans(t, e.topo.Client)
	want := map[string]uint64{}
	for _, fam := range families {
		for range 3 {
			c, err := e.connect(e.topo.Client, fam)
			if err != nil {
				t.Fatal(err)
			}
			c.conn.Close()
			vip := e.topo.VIP4.String()
			if fam == "ipv6" {
				vip = e.topo.VIP6.String()
			}
			want["maglev "+vip]++
		}
	}
	var got map[string]hsCounts
	testenv.EventuallyNil(t, 30*time.Second, "handshake counts", func() error {
		got = e.handshakes(t)
		retrans := synRetrans(t, e.topo.Client) - r0
		var syn uint64
		for k, n := range want {
			c := got[k]
			if c.Synack != n || c.Conns != n {
				return fmt.Errorf("%s: %+v, want %d SYN-ACKs and connections (all: %+v)", k, c, n, got)
			}
			syn += c.Syn
		}
		if syn != 9+retrans {
			return fmt.Errorf("%d SYNs received, want 9 + %d retransmitted (all: %+v)", syn, retrans, got)
		}
		return nil
	})

	for k, c := range got {
		if c.Wrong != 0 {
			t.Errorf("%s: %d SYN-ACKs left through tun0 in a healthy DSR setup", k, c.Wrong)
		}
		if _, ok := want[k]; !ok && (c.Syn != 0 || c.Synack != 0) {
			t.Errorf("unexpected handshake counts for %s: %+v", k, c)
		}
	}
	text, err := e.scrape("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		fmt.Sprintf(`ipng_tcp_synack_sent_total{source_tag="maglev",vip="%s"} 6`, e.topo.VIP4),
		fmt.Sprintf(`ipng_tcp_synack_sent_total{source_tag="maglev",vip="%s"} 3`, e.topo.VIP6),
		fmt.Sprintf(`ipng_tcp_synack_wrong_egress_total{source_tag="maglev",vip="%s"} 0`, e.topo.VIP4),
		`ipng_tcp_handshake_devices{mode="tcx"} 3`, // eth1, eth2, tun0,
	} {
		if !strings.Contains(text, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	out, err := e.ipngStats("check", "--config", e.cfgPath, "--bpf.pin-dir", e.pinDir, "--bpf.cgroup", e.cg.Path)
	if !strings.Contains(out, "ok    handshakes maglev: ") || strings.Contains(out, "FAIL  handshakes") {
		t.Errorf("check on a healthy DSR setup (err %v):\n%s", err, out)
	}
}

// TestHandshakesReturnIntoTunnel: srv's route back to the client points
// into the tunnel, where lb drops it. SYNs arrive and are answered, the
// SYN-ACKs leave through tun0 and no handshake completes; the agent log and
// check name the egress and the return path.
func TestHandshakesReturnIntoTunnel(t *testing.T) {
	e := newHandshakeEnv(t, "")
	agent := e.startAgent("--web.listen-address", "127.0.0.1:9113")
	e.startTagServer("fallback")
	// Without the eth5 route only the tun0 route (metric 1000) is left.
	e.topo.Srv.Run(t, "route", "del", "10.5.0.0/24", "dev", "eth5")
	const attempts = 2
	for range attempts {
		e.failDial(t, e.port)
	}
	key := "maglev " + e.topo.VIP4.String()
	testenv.Eventually(t, 30*time.Second, func() bool {
		c := e.handshakes(t)[key]
		return c.Syn >= attempts && c.Synack == attempts && c.Wrong >= attempts
	}, "SYN-ACKs through tun0")

	if c := e.handshakes(t)[key]; c.Conns != 0 {
		t.Errorf("%d handshakes completed through a blackholed return path", c.Conns)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		out := agent.out.String()
		return strings.Contains(out, "SYN-ACKs leave through tun0") && strings.Contains(out, "the return path drops them")
	}, "the agent's diagnosis")

	out, _ := e.ipngStats("check", "--config", e.cfgPath, "--bpf.pin-dir", e.pinDir, "--bpf.cgroup", e.cg.Path)
	for _, want := range []string{
		"FAIL  handshakes maglev: SYN-ACKs leave through tun0",
		"a route points back into the tunnel",
		"FAIL  handshakes maglev: SYN-ACKs sent (2) but handshakes do not complete (0): the return path drops them",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// TestHandshakesRPFilter: strict reverse-path filtering on tun0 drops the
// SYNs (the route back to the client is via eth5): they are counted where
// they enter, and nothing answers them.
func TestHandshakesRPFilter(t *testing.T) {
	e := newHandshakeEnv(t, "")
	agent := e.startAgent("--web.listen-address", "127.0.0.1:9113")
	e.startTagServer("fallback")
	setSysctl(t, e.topo.Srv, "net.ipv4.conf.tun0.rp_filter", "1")
	const attempts = 2
	for range attempts {
		e.failDial(t, e.port)
	}
	key := "maglev " + e.topo.VIP4.String()
	testenv.Eventually(t, 30*time.Second, func() bool { return e.handshakes(t)[key].Syn >= attempts }, "SYNs counted")
	if c := e.handshakes(t)[key]; c.Synack != 0 || c.Conns != 0 || c.Wrong != 0 {
		t.Errorf("rp_filter drops the SYNs, yet %+v", c)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(agent.out.String(), "SYNs arrive on tun0")
	}, "the agent's diagnosis")

	out, _ := e.ipngStats("check", "--config", e.cfgPath, "--bpf.pin-dir", e.pinDir, "--bpf.cgroup", e.cg.Path)
	if want := "but the stack does not answer (0 SYN-ACKs): rp_filter on tun0"; !strings.Contains(out, want) {
		t.Errorf("check output lacks %q:\n%s", want, out)
	}
}

// setSysctl sets key in ns and restores nothing: the namespace goes with
// the test.
func setSysctl(t *testing.T, ns *topo.NS, key, value string) {
	t.Helper()
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := ns.Do(t, func() error { return os.WriteFile(path, []byte(value), 0o644) }); err != nil {
		t.Fatal(err)
	}
}

// TestHandshakesBoundListener: a listener bound to tun0 with
// SO_BINDTODEVICE answers through tun0: wrong-egress grows. (The listener
// is the test's own, outside the agent's cgroup, so its SYN-ACKs are not
// counted as sent: only what leaves through tun0 is.)
func TestHandshakesBoundListener(t *testing.T) {
	e := newEnv(t, "")
	bound := e.topo.Srv.FreePort(t)
	yaml := bindingsYAML + fmt.Sprintf("handshakes:\n  ports: [%d]\n  diagnose_interval: 1s\n", bound)
	if err := os.WriteFile(e.cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := e.startAgent("--web.listen-address", "127.0.0.1:9113")
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), "tun0") })
		return errors.Join(err, serr)
	}}
	ln, err := e.topo.Srv.ListenWith(context.Background(), &lc, "tcp4", netip.AddrPortFrom(e.topo.VIP4, uint16(bound)).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e.failDial(t, bound)
	key := "maglev " + e.topo.VIP4.String()
	testenv.Eventually(t, 30*time.Second, func() bool {
		c := e.handshakes(t)[key]
		return c.Syn >= 1 && c.Wrong >= 1
	}, "wrong-egress SYN-ACKs")

	testenv.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(agent.out.String(), "a listener is bound to the device")
	}, "the agent's diagnosis")

}

// nextProg is a tc program that does nothing but pass the packet on
// (TCX_NEXT); its run count says it still runs.
func nextProg(t *testing.T, name string) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R0, -1), asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// tcxNames lists the names of the tcx programs of dev in ns, in order.
func tcxNames(t *testing.T, ns *topo.NS, dev string, attach ebpf.AttachType) []string {
	t.Helper()
	idx := ns.Ifindex(t, dev)
	var names []string
	err := ns.Do(t, func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(idx), Attach: attach})
		if err != nil {
			return err
		}
		for _, p := range res.Programs {
			prog, err := ebpf.NewProgramFromID(p.ID)
			if err != nil {
				return err
			}
			info, err := prog.Info()
			prog.Close()
			if err != nil {
				return err
			}
			names = append(names, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// attachOther attaches prog named name to dev in ns with anchor; the link
// goes with the test (or with the device).
func attachOther(t *testing.T, ns *topo.NS, dev string, prog *ebpf.Program, attach ebpf.AttachType, anchor link.Anchor) {
	t.Helper()
	idx := ns.Ifindex(t, dev)
	err := ns.Do(t, func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: int(idx), Program: prog, Attach: attach, Anchor: anchor})
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func runCount(t *testing.T, p *ebpf.Program) uint64 {
	t.Helper()
	s, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s.RunCount
}

// TestHandshakesCoexistAndFollow: other tcx programs on the bound device,
// attached before and after the agent's, keep running and keep their order;
// the device re-created with a new ifindex is counted again; a stopped
// agent leaves no program behind.
func TestHandshakesCoexistAndFollow(t *testing.T) {
	e := newHandshakeEnv(t, "")
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	before, after := nextProg(t, "hs_test_before"), nextProg(t, "hs_test_after")
	names := func(p *ebpf.Program) string {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.Name
	}
	nb, na := names(before), names(after)
	attachOther(t, e.topo.Srv, "tun0", before, ebpf.AttachTCXIngress, link.Tail())
	attachOther(t, e.topo.Srv, "tun0", before, ebpf.AttachTCXEgress, link.Tail())
	agent := e.startAgent("--web.listen-address", "127.0.0.1:9113")
	e.startTagServer("fallback")
	testenv.Eventually(t, 30*time.Second, func() bool {
		return len(tcxNames(t, e.topo.Srv, "tun0", ebpf.AttachTCXIngress)) == 2
	}, "the agent's programs on tun0")

	attachOther(t, e.topo.Srv, "tun0", after, ebpf.AttachTCXIngress, link.Tail())
	attachOther(t, e.topo.Srv, "tun0", after, ebpf.AttachTCXEgress, link.Tail())
	in := tcxNames(t, e.topo.Srv, "tun0", ebpf.AttachTCXIngress)
	out := tcxNames(t, e.topo.Srv, "tun0", ebpf.AttachTCXEgress)
	if fmt.Sprint(in) != fmt.Sprint([]string{"ipng_hs_ingress", nb, na}) {
		t.Errorf("tun0 ingress programs %v, want ours first, then the others in their order", in)
	}
	if fmt.Sprint(out) != fmt.Sprint([]string{nb, "ipng_hs_egress", na}) {
		t.Errorf("tun0 egress programs %v, want ours after the earlier one, the later one last", out)
	}
	rb, ra := runCount(t, before), runCount(t, after)
	key := "maglev " + e.topo.VIP4.String()
	connect := func(n uint64) {
		t.Helper()
		e.connectClose(t, e.topo.Client, "ipv4", int(n))
	}
	connect(2)
	testenv.Eventually(t, 30*time.Second, func() bool {
		c := e.handshakes(t)[key]
		return c.Synack == 2 && c.Conns == 2
	}, "2 handshakes")

	if runCount(t, before) == rb || runCount(t, after) == ra {
		t.Errorf("the other programs stopped running: %d -> %d, %d -> %d", rb, runCount(t, before), ra, runCount(t, after))
	}

	// Re-created with a new ifindex: counting continues.
	old := e.topo.Srv.Ifindex(t, "tun0")
	e.topo.RecreateTunnel(t)
	if e.topo.Srv.Ifindex(t, "tun0") == old {
		t.Fatal("tun0 kept its ifindex")
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		return fmt.Sprint(tcxNames(t, e.topo.Srv, "tun0", ebpf.AttachTCXIngress)) == "[ipng_hs_ingress]"
	}, "the agent's programs on the new tun0")

	connect(3)
	testenv.Eventually(t, 30*time.Second, func() bool {
		c := e.handshakes(t)[key]
		return c.Synack == 5 && c.Conns == 5
	}, "5 handshakes")

	// Another program on the new tun0, then the agent stops: only it is left.
	attachOther(t, e.topo.Srv, "tun0", after, ebpf.AttachTCXIngress, link.Tail())
	agent.stop(t, syscall.SIGTERM)
	for _, a := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		want := "[]"
		if a == ebpf.AttachTCXIngress {
			want = "[" + na + "]"
		}
		if got := fmt.Sprint(tcxNames(t, e.topo.Srv, "tun0", a)); got != want {
			t.Errorf("after the agent stopped, tun0 %v programs %s, want %s", a, got, want)
		}
	}
	for _, dev := range []string{"eth1", "eth2"} {
		for _, a := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			if got := tcxNames(t, e.topo.Srv, dev, a); len(got) != 0 {
				t.Errorf("after the agent stopped, %s %v programs %v", dev, a, got)
			}
		}
	}
	if _, err := os.Stat(e.pinDir + "/ipng_hs_counts"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("handshake counts still pinned after the agent stopped: %v", err)
	}
	ra = runCount(t, after)
	connect(1)
	if runCount(t, after) == ra {
		t.Error("the other program stopped running after the agent stopped")
	}
}

// TestHandshakesReload: SIGHUP applies new ports at once, and a binding
// removed by a reload takes the programs off its device.
func TestHandshakesReload(t *testing.T) {
	e := newEnv(t, "")
	other := e.topo.Srv.FreePort(t)
	write := func(yaml string) {
		t.Helper()
		if err := os.WriteFile(e.cfgPath, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(bindingsYAML + fmt.Sprintf("handshakes:\n  ports: [%d]\n", other))
	agent := e.startAgent("--web.listen-address", "127.0.0.1:9113")
	e.startTagServer("fallback")
	key := "maglev " + e.topo.VIP4.String()
	connect := func() {
		t.Helper()
		c, err := e.connect(e.topo.Client, "ipv4")
		if err != nil {
			t.Fatal(err)
		}
		c.conn.Close()
	}
	connect()
	testenv.Eventually(t, 30*time.Second, func() bool { return e.handshakes(t)[key].Conns == 1 }, "the connection counted")
	if c := e.handshakes(t)[key]; c.Syn != 0 || c.Synack != 0 {
		t.Errorf("a port out of scope was counted: %+v", c)
	}

	write(bindingsYAML + fmt.Sprintf("handshakes:\n  ports: [%d, %d]\n", other, e.port))
	agent.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 30*time.Second, func() bool {
		connect()
		c := e.handshakes(t)[key]
		return c.Syn >= 1 && c.Synack >= 1
	}, "the new ports counted")

	// tun0 unbound: its programs go, the others stay.
	write(strings.Replace(bindingsYAML, "    - device: tun0\n      tag: maglev\n", "", 1) + fmt.Sprintf("handshakes:\n  ports: [%d]\n", e.port))
	agent.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 30*time.Second, func() bool {
		return len(tcxNames(t, e.topo.Srv, "tun0", ebpf.AttachTCXIngress)) == 0 &&
			len(tcxNames(t, e.topo.Srv, "tun0", ebpf.AttachTCXEgress)) == 0
	}, "the programs off tun0")

	if got := tcxNames(t, e.topo.Srv, "eth1", ebpf.AttachTCXIngress); fmt.Sprint(got) != "[ipng_hs_ingress]" {
		t.Errorf("eth1 ingress programs %v after tun0 was unbound", got)
	}
}

// TestHandshakesNotLocal: SYNs through the tunnel to an address srv does
// not have (a scan) make no series, and are counted as such.
func TestHandshakesNotLocal(t *testing.T) {
	e := newHandshakeEnv(t, "")
	e.startAgent("--web.listen-address", "127.0.0.1:9113")
	e.topo.LB.Run(t, "route", "add", "192.0.2.99/32", "via", e.topo.SrvAddr["tun0"].V4.String(), "dev", "tun0")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if c, err := e.topo.LB.Dial(ctx, "tcp4", netip.AddrPortFrom(netip.MustParseAddr("192.0.2.99"), uint16(e.port)).String()); err == nil {
		c.Close()
		t.Fatal("connected to an address srv does not have")
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		text, err := e.scrape("/metrics")
		if err != nil {
			t.Fatal(err)
		}
		return !strings.Contains(text, "ipng_tcp_handshake_syn_not_local_total 0\n") &&
			strings.Contains(text, "ipng_tcp_handshake_syn_not_local_total ")
	}, "the SYN counted as not local")

	for k := range e.handshakes(t) {
		if strings.HasSuffix(k, " 192.0.2.99") {
			t.Errorf("a series for the address srv does not have: %s", k)
		}
	}
}
