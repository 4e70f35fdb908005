package handshake

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/loader"
)

// TestSynackProgramOnlyWhileCounting: the SYN-ACK (sock_ops) program is
// attached to the cgroup only while a device is counted. Without a bound
// device it could count nothing, and every connection of the cgroup (the
// host's, by default) would still run it.
func TestSynackProgramOnlyWhileCounting(t *testing.T) {
	testenv.RequireRoot(t)
	mount, err := loader.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	cg := testenv.NewCgroup(t, mount)
	attached := func() []ebpf.ProgramID {
		t.Helper()
		f, err := os.Open(cg.Path)
		if err != nil {
			t.Error(err)
			return nil
		}
		defer f.Close()
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: ebpf.AttachCGroupSockOps})
		if err != nil {
			t.Error(err)
			return nil
		}
		var ids []ebpf.ProgramID
		for _, p := range res.Programs {
			ids = append(ids, p.ID)
		}
		return ids
	}
	inNetns(t, func() {
		l, err := netlink.LinkByName("hs0")
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Error(err)
			return
		}
		r := bindings.NewResolver(bindings.Spec{}, nil)
		r.SetLinks([]bindings.Link{{Index: uint32(l.Attrs().Index), Name: "hs0"}})
		col, err := collector.New(collector.Config{}, collector.Options{})
		if err != nil {
			t.Error(err)
			return
		}
		m, err := New(Config{Ports: []uint16{80}}, Options{Bindings: r, Collector: col, Cgroup: cg.Path})
		if err != nil {
			t.Error(err)
			return
		}
		defer m.Close()
		info, err := m.objs.IpngHsSockops.Info()
		if err != nil {
			t.Error(err)
			return
		}
		id, _ := info.ID()

		m.Attach()
		if got := attached(); len(got) != 0 || len(m.Attached()) != 0 {
			t.Errorf("no bound device: sock_ops programs %v on the cgroup, devices %v; want none", got, m.Attached())
		}
		r.SetSpec(bindings.Spec{Bindings: []bindings.Binding{{Device: "hs0", Tag: "t"}}})
		m.Attach()
		if got := attached(); len(got) != 1 || got[0] != id || m.Attached()["hs0"] == "" {
			t.Errorf("hs0 bound: sock_ops programs %v on the cgroup, devices %v; want the SYN-ACK program (%d) and hs0", got, m.Attached(), id)
		}
		r.SetSpec(bindings.Spec{})
		m.Attach()
		if got := attached(); len(got) != 0 || len(m.Attached()) != 0 {
			t.Errorf("binding removed: sock_ops programs %v on the cgroup, devices %v; want none", got, m.Attached())
		}
		r.SetSpec(bindings.Spec{Bindings: []bindings.Binding{{Device: "hs0", Tag: "t"}}})
		m.Attach()
		if got := attached(); len(got) != 1 {
			t.Errorf("bound again: sock_ops programs %v on the cgroup; want the SYN-ACK program", got)
		}
		m.Close()
		if got := attached(); len(got) != 0 {
			t.Errorf("after Close: sock_ops programs %v on the cgroup", got)
		}
	})
}
