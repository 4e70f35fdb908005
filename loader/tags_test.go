package loader

import (
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/family"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestTagAtAcceptAndKernelCounts: the program stamps each connection with
// the tag its interface had when it was accepted (a binding changed later
// does not change it) and counts connections opened and closed per (tag,
// VIP) in the kernel; tag ids survive a restart of the TagTable (the names
// are pinned).
func TestTagAtAcceptAndKernelCounts(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testCgroup(t)
	p, err := Load(Config{Cgroup: cg, PinDir: pinDir(t)}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	tt, err := NewTagTable(p.Maps())
	if err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	table := func(tag string) []Iface {
		return []Iface{{Ifindex: uint32(lo.Index), Family: family.IPv4, Device: "lo", Tag: tag, Bound: true},
			{Ifindex: uint32(lo.Index), Family: family.IPv6, Device: "lo", Tag: tag, Bound: true}}
	}
	if err := tt.Sync(table("first")); err != nil {
		t.Fatal(err)
	}
	port := startServer(t, cg)
	const n = 5
	var firstConns []net.Conn
	for range n {
		firstConns = append(firstConns, dial(t, port))
	}
	if err := tt.Sync(table("second")); err != nil {
		t.Fatal(err)
	}
	later := dial(t, port)

	tagOf := func(c net.Conn) string {
		s := findStamp(t, p.Maps(), c.LocalAddr().(*net.TCPAddr).AddrPort())
		name, _ := tt.Name(s.TagID)
		if s.Device.String() != "lo" || !s.Device.Is("lo") || !s.Bound {
			t.Errorf("stamp device %q bound %v, want lo, true", s.Device.String(), s.Bound)
		}
		return name
	}
	if got := tagOf(firstConns[0]); got != "first" {
		t.Errorf("connection accepted under binding first has tag %q", got)
	}
	if got := tagOf(later); got != "second" {
		t.Errorf("connection accepted under binding second has tag %q", got)
	}

	// Two of the first connections close: the kernel counts them closed
	// in the series they were opened in.
	firstConns[0].Close()
	firstConns[1].Close()
	vip := netip.MustParseAddr("127.0.0.1")
	want := map[string][2]uint64{"first": {n, 2}, "second": {1, 0}}
	var got map[string][2]uint64
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		counts, err := p.Maps().ReadConns()
		if err != nil {
			t.Fatal(err)
		}
		got = map[string][2]uint64{}
		for _, c := range counts {
			name, _ := tt.Name(c.Key.TagID)
			if c.Key.VIP == vip && c.Key.Bound {
				got[name] = [2]uint64{c.Opened, c.Closed}
			}
		}
		if got["first"] == want["first"] && got["second"] == want["second"] {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got["first"] != want["first"] || got["second"] != want["second"] {
		t.Errorf("kernel counts %v, want %v", got, want)
	}

	// A new TagTable (an agent restart) keeps the ids.
	tt2, err := NewTagTable(p.Maps())
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"first", "second"} {
		id, _ := tt.byName[tag]
		if name, ok := tt2.Name(id); !ok || name != tag {
			t.Errorf("after restart id %d is %q, want %q", id, name, tag)
		}
	}
}

// TestSeriesAcrossRestarts: the connection-count series keep their indexes
// across a restart (the next free index is pinned with them), so that a
// series first seen after the restart does not add to an older one, and a
// close after the restart is counted in the series its connection was
// opened in. When one of the series maps is gone, they and the live
// stamps (which name their series by index) start afresh rather than
// mixing counts.
func TestSeriesAcrossRestarts(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testCgroup(t)
	dir := pinDir(t)
	cfg := Config{Cgroup: cg, PinDir: dir, KeepOnExit: true}
	p, err := Load(cfg, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	tt, err := NewTagTable(p.Maps())
	if err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	table := func(tag string) []Iface {
		return []Iface{{Ifindex: uint32(lo.Index), Family: family.IPv4, Device: "lo", Tag: tag, Bound: true}}
	}
	if err := tt.Sync(table("before")); err != nil {
		t.Fatal(err)
	}
	port := startServer(t, cg)
	before := []net.Conn{dial(t, port), dial(t, port)}
	waitCounts(t, p.Maps(), tt, map[string][2]uint64{"before": {2, 0}})
	p.Close()

	p2, err := Load(cfg, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	tt2, err := NewTagTable(p2.Maps())
	if err != nil {
		t.Fatal(err)
	}
	if err := tt2.Sync(table("after")); err != nil {
		t.Fatal(err)
	}
	dial(t, port)
	before[0].Close()
	waitCounts(t, p2.Maps(), tt2, map[string][2]uint64{"before": {2, 1}, "after": {1, 0}})
	p2.Close()

	// The next free index is lost: the three maps start afresh.
	if err := os.Remove(filepath.Join(dir, PinSeriesNext)); err != nil {
		t.Fatal(err)
	}
	p3, err := Load(Config{Cgroup: cg, PinDir: dir}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p3.Close()
	if !p3.ReplacedPins() {
		t.Error("series maps with a missing pin were not replaced")
	}
	tt3, err := NewTagTable(p3.Maps())
	if err != nil {
		t.Fatal(err)
	}
	if err := tt3.Sync(table("third")); err != nil {
		t.Fatal(err)
	}
	dial(t, port)
	// The connection opened before the maps were replaced closes: its
	// series is gone, so it is not counted anywhere.
	before[1].Close()
	waitCounts(t, p3.Maps(), tt3, map[string][2]uint64{"third": {1, 0}})
}

// waitCounts waits until the kernel counts of 127.0.0.1 per tag are want
// (and no other tag has any).
func waitCounts(t *testing.T, m *Maps, tt *TagTable, want map[string][2]uint64) {
	t.Helper()
	vip := netip.MustParseAddr("127.0.0.1")
	var got map[string][2]uint64
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		counts, err := m.ReadConns()
		if err != nil {
			t.Fatal(err)
		}
		got = map[string][2]uint64{}
		for _, c := range counts {
			name, _ := tt.Name(c.Key.TagID)
			if c.Key.VIP == vip {
				got[name] = [2]uint64{c.Opened, c.Closed}
			}
		}
		if maps.Equal(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("kernel counts %v, want %v", got, want)
}

// TestIfaceSlots: the program reads an interface's tag from its slot in
// ipng_iface_slots (ifindexes below 4096) and from ipng_ifaces when the slot
// is empty (larger ifindexes, or a slot not written); NewTagTable writes the
// slots that do not say what ipng_ifaces says (an upgrade from a version
// without them).
func TestIfaceSlots(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []struct {
		ifindex uint32
		fam     family.Family
		slot    uint32
		ok      bool
	}{{1, family.IPv4, 2, true}, {1, family.IPv6, 3, true}, {4095, family.IPv6, 8191, true}, {4096, family.IPv4, 0, false}} {
		slot, ok := slotOf(ipngbpf.SockopsIpngIfaceKey{Ifindex: c.ifindex, Family: uint32(c.fam)})
		if slot != c.slot || ok != c.ok {
			t.Errorf("slotOf(%d, %v) = %d, %v; want %d, %v", c.ifindex, c.fam, slot, ok, c.slot, c.ok)
		}
	}
	cg := testCgroup(t)
	p, err := Load(Config{Cgroup: cg, PinDir: pinDir(t)}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	m := p.Maps()
	tt, err := NewTagTable(m)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := tt.Sync([]Iface{{Ifindex: uint32(lo.Index), Family: family.IPv4, Device: "lo", Tag: "slotted", Bound: true}}); err != nil {
		t.Fatal(err)
	}
	port := startServer(t, cg)
	tagOf := func() string {
		c := dial(t, port)
		s := findStamp(t, m, c.LocalAddr().(*net.TCPAddr).AddrPort())
		name, _ := tt.Name(s.TagID)
		return name
	}
	if got := tagOf(); got != "slotted" {
		t.Errorf("tag from the slot %q, want slotted", got)
	}
	// The slot emptied: the program finds the tag in ipng_ifaces.
	slot := uint32(lo.Index * 2)
	if err := m.IfaceSlots.Put(&slot, &ipngbpf.SockopsIpngIface{}); err != nil {
		t.Fatal(err)
	}
	if got := tagOf(); got != "slotted" {
		t.Errorf("tag from ipng_ifaces %q, want slotted", got)
	}
	// A new TagTable writes the slot again.
	if _, err := NewTagTable(m); err != nil {
		t.Fatal(err)
	}
	var v ipngbpf.SockopsIpngIface
	if err := m.IfaceSlots.Lookup(&slot, &v); err != nil || v.TagId == 0 || v.Bound != 1 {
		t.Errorf("slot after NewTagTable %+v, %v; want the tag, bound", v, err)
	}
}
