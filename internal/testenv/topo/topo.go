package topo

import (
	"context"
	"fmt"
	"github.com/ipng/ipng-stats/internal/testenv"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

const (
	nsPrefix = "ipngt-" // namespace and cgroup name prefix
	vni      = "42"     // vxlan id of tun0
)

// AddrPair is an IPv4 and an IPv6 address. It is an alias, so
// Topo.SrvAddr is a plain map[string]struct{ V4, V6 netip.Addr }.
type AddrPair = struct{ V4, V6 netip.Addr }

// Topo is one test's topology; see the package documentation.
type Topo struct {
	Srv, C1, C2, LB, C4, Client *NS // Client is "cl", the DSR client

	VIP4, VIP6 netip.Addr // 192.0.2.10, 2001:db8:10::10 on srv's lo

	// SrvAddr holds srv's addresses by srv device name: "eth1", "eth2",
	// "eth3" (vxlan underlay), "tun0", "mv0", "eth5" (DSR return link).
	SrvAddr map[string]AddrPair
}

// All returns all namespaces, srv first.
func (tp *Topo) All() []*NS {
	return []*NS{tp.Srv, tp.C1, tp.C2, tp.LB, tp.C4, tp.Client}
}

// Require skips the test unless it can build topologies (root, ip and
// nsenter available). With IPNG_STATS_E2E=1 in the environment it fails
// instead, because in CI a skipped end-to-end test is a failed one.
func Require(t testing.TB) { t.Helper(); testenv.RequireNetns(t) }

// registry remembers every namespace this process created, so the
// package's own TestMain can check that cleanup left none behind.
var registry nameSet

type nameSet struct {
	mu    sync.Mutex
	names map[string]bool
}

func (s *nameSet) add(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		s.names = map[string]bool{}
	}
	s.names[name] = true
}

// createdNames returns the names of all namespaces New has created.
func createdNames() map[string]bool {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	m := make(map[string]bool, len(registry.names))
	for n := range registry.names {
		m[n] = true
	}
	return m
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func randomID() string { return testenv.RandomID() }

// New builds the topology in fresh namespaces and registers a cleanup that
// deletes them. It fails the test on any error.
func New(t testing.TB) *Topo {
	t.Helper()
	Require(t)
	tp := &Topo{
		VIP4: mustAddr("192.0.2.10"),
		VIP6: mustAddr("2001:db8:10::10"),
		SrvAddr: map[string]AddrPair{
			"eth1": {mustAddr("10.1.0.1"), mustAddr("fd00:1::1")},
			"eth2": {mustAddr("10.2.0.1"), mustAddr("fd00:2::1")},
			"eth3": {mustAddr("10.3.0.1"), mustAddr("fd00:3::1")},
			"tun0": {mustAddr("10.30.0.1"), mustAddr("fd00:30::1")},
			"mv0":  {mustAddr("10.4.0.1"), mustAddr("fd00:4::1")},
			"eth5": {mustAddr("10.6.0.1"), mustAddr("fd00:6::1")},
		},
	}

	var created []*NS
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			if err := created[i].Remove(); err != nil {
				t.Errorf("topo cleanup: %v", err)
			}
		}
	})
	newNS := func(id, role string) (*NS, error) {
		ns, err := testenv.CreateNS(nsPrefix + id + "-" + role)
		if ns != nil {
			created = append(created, ns)
			registry.add(ns.Name)
		}
		return ns, err
	}

	// srv first: if its name is taken, another topology drew the same id.
	var id string
	for try := 0; ; try++ {
		id = randomID()
		ns, err := newNS(id, "srv")
		if err == nil {
			tp.Srv = ns
			break
		}
		if try == 4 {
			t.Fatal(err)
		}
	}
	for _, p := range []struct {
		ns   **NS
		role string
	}{{&tp.C1, "c1"}, {&tp.C2, "c2"}, {&tp.LB, "lb"}, {&tp.C4, "c4"}, {&tp.Client, "cl"}} {
		ns, err := newNS(id, p.role)
		if err != nil {
			t.Fatal(err)
		}
		*p.ns = ns
	}
	tp.build(t)
	return tp
}

// addrs adds an IPv4 and an IPv6 address (without DAD) and sets dev up.
func addrs(t testing.TB, ns *NS, dev, v4, v6 string) {
	t.Helper()
	ns.Run(t, "addr", "add", v4, "dev", dev)
	ns.Run(t, "-6", "addr", "add", v6, "dev", dev, "nodad")
	ns.Run(t, "link", "set", dev, "up")
}

// routeVIPs routes both VIPs in ns via gw4/gw6.
func (tp *Topo) routeVIPs(t testing.TB, ns *NS, dev, gw4, gw6 string) {
	t.Helper()
	ns.Run(t, "route", "add", tp.VIP4.String()+"/32", "via", gw4, "dev", dev)
	ns.Run(t, "-6", "route", "add", tp.VIP6.String()+"/128", "via", gw6, "dev", dev)
}

func (tp *Topo) build(t testing.TB) {
	t.Helper()
	srv, lb, cl := tp.Srv, tp.LB, tp.Client
	for _, ns := range tp.All() {
		ns.Run(t, "link", "set", "lo", "up")
	}
	srv.Run(t, "addr", "add", tp.VIP4.String()+"/32", "dev", "lo")
	srv.Run(t, "-6", "addr", "add", tp.VIP6.String()+"/128", "dev", "lo", "nodad")

	// veth creates both ends in place: nothing ever exists in the root ns.
	veth := func(a *NS, aDev string, b *NS, bDev string) {
		a.Run(t, "link", "add", aDev, "type", "veth", "peer", "name", bDev, "netns", b.Name)
	}

	// Plain clients c1, c2.
	for i, c := range []*NS{tp.C1, tp.C2} {
		n := fmt.Sprint(i + 1)
		veth(srv, "eth"+n, c, "eth0")
		addrs(t, srv, "eth"+n, "10."+n+".0.1/24", "fd00:"+n+"::1/64")
		addrs(t, c, "eth0", "10."+n+".0.2/24", "fd00:"+n+"::2/64")
		tp.routeVIPs(t, c, "eth0", "10."+n+".0.1", "fd00:"+n+"::1")
		c.V4, c.V6 = mustAddr("10."+n+".0.2"), mustAddr("fd00:"+n+"::2")
	}

	// lb: underlay veth eth3 (MTU 1550, so tun0 can have 1500 and nobody
	// needs PMTU discovery) and the vxlan tunnel tun0 on top of it.
	veth(srv, "eth3", lb, "eth0")
	srv.Run(t, "link", "set", "eth3", "mtu", "1550")
	lb.Run(t, "link", "set", "eth0", "mtu", "1550")
	addrs(t, srv, "eth3", "10.3.0.1/24", "fd00:3::1/64")
	addrs(t, lb, "eth0", "10.3.0.2/24", "fd00:3::2/64")
	tp.addTunnel(t, srv)
	tp.addTunnel(t, lb)
	tp.routeVIPs(t, lb, "tun0", "10.30.0.1", "fd00:30::1")
	lb.V4, lb.V6 = mustAddr("10.30.0.2"), mustAddr("fd00:30::2")

	// c4 reaches srv's macvlan mv0, whose lower device eth4 stays
	// address-less, ARP-silent and IPv6-less, so traffic is seen on mv0.
	veth(srv, "eth4", tp.C4, "eth0")
	srv.Run(t, "link", "add", "mv0", "link", "eth4", "type", "macvlan", "mode", "bridge")
	if err := srv.Sysctl("ipv4/conf/eth4/arp_ignore", "1", "ipv6/conf/eth4/disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
	srv.Run(t, "link", "set", "eth4", "up")
	addrs(t, srv, "mv0", "10.4.0.1/24", "fd00:4::1/64")
	addrs(t, tp.C4, "eth0", "10.4.0.2/24", "fd00:4::2/64")
	tp.routeVIPs(t, tp.C4, "eth0", "10.4.0.1", "fd00:4::1")
	tp.C4.V4, tp.C4.V6 = mustAddr("10.4.0.2"), mustAddr("fd00:4::2")

	// DSR: cl -> lb (eth1) -> tun0 -> srv; srv eth5 -> cl eth1 directly.
	veth(lb, "eth1", cl, "eth0")
	addrs(t, lb, "eth1", "10.5.0.1/24", "fd00:5::1/64")
	addrs(t, cl, "eth0", "10.5.0.2/24", "fd00:5::2/64")
	tp.routeVIPs(t, cl, "eth0", "10.5.0.1", "fd00:5::1")
	cl.V4, cl.V6 = mustAddr("10.5.0.2"), mustAddr("fd00:5::2")
	veth(srv, "eth5", cl, "eth1")
	addrs(t, srv, "eth5", "10.6.0.1/24", "fd00:6::1/64")
	addrs(t, cl, "eth1", "10.6.0.2/24", "fd00:6::2/64")
	srv.Run(t, "route", "add", "10.5.0.0/24", "via", "10.6.0.2", "dev", "eth5", "metric", "100")
	srv.Run(t, "-6", "route", "add", "fd00:5::/64", "via", "fd00:6::2", "dev", "eth5", "metric", "100")
	tp.addTunnelFallbackRoutes(t)
	// The tunnel is one-way: lb drops what comes back out of it for cl.
	lb.Run(t, "rule", "add", "pref", "100", "iif", "tun0", "to", "10.5.0.0/24", "blackhole")
	lb.Run(t, "-6", "rule", "add", "pref", "100", "iif", "tun0", "to", "fd00:5::/64", "blackhole")

	if err := lb.Sysctl("ipv4/ip_forward", "1", "ipv6/conf/all/forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	// Belt and braces: devices inherit rp_filter=0 from "default", but a
	// leftover value from devconf_inherit_init_net must not break DSR.
	for _, ns := range tp.All() {
		if err := ns.Sysctl("ipv4/conf/*/rp_filter", "0"); err != nil {
			t.Fatal(err)
		}
	}
}

// addTunnel creates tun0 in ns (srv or lb) over its underlay device. The MAC
// address is fixed, so a re-created tun0 keeps it and the peer's neighbour
// cache stays valid.
func (tp *Topo) addTunnel(t testing.TB, ns *NS) {
	t.Helper()
	under, local, remote, mac, n := "eth3", "10.3.0.1", "10.3.0.2", "02:00:0a:1e:00:01", "1"
	if ns == tp.LB {
		under, local, remote, mac, n = "eth0", "10.3.0.2", "10.3.0.1", "02:00:0a:1e:00:02", "2"
	}
	ns.Run(t, "link", "add", "tun0", "address", mac, "mtu", "1500", "type", "vxlan", "id", vni,
		"local", local, "remote", remote, "dstport", "4789", "dev", under)
	if err := ns.Sysctl("ipv4/conf/tun0/rp_filter", "0"); err != nil {
		t.Fatal(err)
	}
	addrs(t, ns, "tun0", "10.30.0."+n+"/24", "fd00:30::"+n+"/64")
}

// addTunnelFallbackRoutes gives srv a worse route to cl's subnet through
// the tunnel. Normal lookups use eth5 (metric 100); a socket bound to tun0
// looks up with oif=tun0 and gets this one, so its replies really enter the
// tunnel (and die in lb) instead of failing neighbour resolution in srv.
func (tp *Topo) addTunnelFallbackRoutes(t testing.TB) {
	t.Helper()
	tp.Srv.Run(t, "route", "add", "10.5.0.0/24", "via", "10.30.0.2", "dev", "tun0", "metric", "1000")
	tp.Srv.Run(t, "-6", "route", "add", "fd00:5::/64", "via", "fd00:30::2", "dev", "tun0", "metric", "1000")
}

// DeleteLink deletes dev in ns (e.g. to test that ipng-stats copes with a
// vanishing interface).
func (tp *Topo) DeleteLink(t testing.TB, ns *NS, dev string) {
	t.Helper()
	ns.Run(t, "link", "del", dev)
}

// RecreateTunnel deletes srv's tun0 and creates it again with the same
// name, MAC, addresses and routes, so it gets a new ifindex. It then checks
// (bounded) that lb reaches srv's tun0 address and the VIPs over it again.
func (tp *Topo) RecreateTunnel(t testing.TB) {
	t.Helper()
	tp.DeleteLink(t, tp.Srv, "tun0")
	tp.addTunnel(t, tp.Srv)
	tp.addTunnelFallbackRoutes(t)
	for _, ip := range []netip.Addr{tp.SrvAddr["tun0"].V4, tp.SrvAddr["tun0"].V6, tp.VIP4, tp.VIP6} {
		if err := Probe(tp.LB, tp.Srv, ip, 5*time.Second); err != nil {
			t.Fatalf("RecreateTunnel: %v", err)
		}
	}
}

// Probe checks TCP connectivity: it listens on ip (any free port) in to,
// connects from from and exchanges one byte each way, retrying until
// timeout.
func Probe(from, to *NS, ip netip.Addr, timeout time.Duration) error {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	l, err := to.ListenWith(context.Background(), &lc, "tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		return err
	}
	defer l.Close()
	go func() { // echo one byte per connection until l is closed
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(timeout))
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					c.Write(b)
				}
			}()
		}
	}()
	deadline := time.Now().Add(timeout)
	for {
		err = probeOnce(from, l.Addr().String(), deadline)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("probe %s -> %s (%s): %w", from.Name, l.Addr(), to.Name, err)
	}
	return nil
}

func probeOnce(from *NS, addr string, deadline time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline))
	defer cancel()
	c, err := from.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte{'p'}); err != nil {
		return err
	}
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	return err
}
