package loader

import (
	"net"
	"net/netip"
	"testing"
	"time"

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
