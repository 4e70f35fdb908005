package handshake

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv"
)

func TestDiagnose(t *testing.T) {
	dev := func(syn, synack, wrong uint64) map[string]Totals {
		return map[string]Totals{"gre-mg1": {syn, synack, wrong}}
	}
	for _, tc := range []struct {
		name   string
		s      Sample
		stages []string
		want   []string
	}{
		{"healthy", Sample{Devices: map[string]map[string]Totals{"mg1": dev(10, 10, 0)}, Completed: map[string]uint64{"mg1": 10}}, nil, nil},
		{"no traffic", Sample{Devices: map[string]map[string]Totals{"mg1": dev(0, 0, 0)}, Completed: map[string]uint64{}}, nil, nil},
		{"rp_filter", Sample{Devices: map[string]map[string]Totals{"mg1": dev(10, 0, 0)}, Completed: map[string]uint64{}},
			[]string{StageAnswer}, []string{"SYNs arrive on gre-mg1 (10) but the stack does not answer (0 SYN-ACKs): rp_filter on gre-mg1"}},
		{"wrong egress", Sample{Devices: map[string]map[string]Totals{"mg1": dev(10, 10, 10)}, Completed: map[string]uint64{}},
			[]string{StageEgress, StageReturn}, []string{"SYN-ACKs leave through gre-mg1 (10 of them): a listener is bound to the device or a route points back into the tunnel",
				"SYN-ACKs sent (10) but handshakes do not complete (0): the return path drops them"}},
		{"return path", Sample{Devices: map[string]map[string]Totals{"mg1": dev(12, 10, 0)}, Completed: map[string]uint64{"mg1": 4}},
			[]string{StageReturn}, []string{"the return path drops them"}},
		{"half is not bad enough", Sample{Devices: map[string]map[string]Totals{"mg1": dev(10, 5, 0)}, Completed: map[string]uint64{"mg1": 3}}, nil, nil},
		{"no completions known", Sample{Devices: map[string]map[string]Totals{"mg1": dev(10, 10, 0)}}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Diagnose(tc.s)
			var stages []string
			for i, f := range got {
				stages = append(stages, f.Stage)
				if f.Tag != "mg1" {
					t.Errorf("finding %d tag %q", i, f.Tag)
				}
				if i < len(tc.want) && !strings.Contains(f.Message, tc.want[i]) {
					t.Errorf("finding %d = %q, want it to contain %q", i, f.Message, tc.want[i])
				}
			}
			if !slices.Equal(stages, tc.stages) {
				t.Errorf("stages %v, want %v (%+v)", stages, tc.stages, got)
			}
		})
	}
}

func TestSampleMinus(t *testing.T) {
	a := Sample{Devices: map[string]map[string]Totals{"t": {"d": {5, 4, 1}}}, Completed: map[string]uint64{"t": 3}}
	b := Sample{Devices: map[string]map[string]Totals{"t": {"d": {9, 6, 1}}}, Completed: map[string]uint64{"t": 6}}
	d := b.minus(a)
	if got := d.Devices["t"]["d"]; got != (Totals{4, 2, 0}) || d.Completed["t"] != 3 {
		t.Errorf("minus = %+v %v", got, d.Completed)
	}
}

func TestListening(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tcp")
	data := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:2391 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0A00000A:0050 0A000002:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
`
	if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := listening(f)
	if err != nil || !slices.Equal(got, []uint16{80, 9105}) {
		t.Errorf("listening = %v, %v; want [80 9105] (established sockets are not listeners)", got, err)
	}
	if err := os.WriteFile(f, []byte("hdr\n 0: 00000000:ZZZZ 00000000:0000 0A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := listening(f); err == nil {
		t.Error("a bad port parsed without error")
	}
}

// inNetns runs fn on a thread in a new network namespace with a veth pair
// "hs0"/"hs1", and leaves the namespace (deleted with its last reference).
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.RequireRoot(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if _, err := netns.New(); err != nil {
			t.Errorf("new netns: %v", err)
			return
		}
		la := netlink.NewLinkAttrs()
		la.Name = "hs0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "hs1"}); err != nil {
			t.Errorf("veth: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// TestLegacyAttach: the clsact fallback adds its filters around a filter
// that is already there, without replacing it, and removes only its own.
func TestLegacyAttach(t *testing.T) {
	inNetns(t, func() {
		l, err := netlink.LinkByName("hs0")
		if err != nil {
			t.Error(err)
			return
		}
		idx := uint32(l.Attrs().Index)
		r := bindings.NewResolver(bindings.Spec{Bindings: []bindings.Binding{{Device: "hs0", Tag: "t"}}}, nil)
		r.SetLinks([]bindings.Link{{Index: idx, Name: "hs0"}})
		col, err := collector.New(collector.Config{}, collector.Options{})
		if err != nil {
			t.Error(err)
			return
		}
		cg := t.TempDir() // not a cgroup: New must fail cleanly
		if _, err := New(Config{Ports: []uint16{80}}, Options{Bindings: r, Collector: col, Cgroup: cg}); err == nil {
			t.Error("New attached to a directory that is not a cgroup")
		}
		m := &Monitor{cfg: Config{Legacy: true}, log: discard(), att: map[uint32]*attachment{}, known: map[uint32]device{}}
		if err := m.loadOnly(); err != nil {
			t.Error(err)
			return
		}
		defer m.objs.Close()
		// Someone else's filter, at priority 5 on ingress.
		if err := netlink.QdiscAdd(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: int(idx),
			Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}); err != nil {
			t.Error(err)
			return
		}
		other := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: int(idx), Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: netlink.MakeHandle(0, 1), Protocol: 3, Priority: 5}, Fd: m.objs.IpngHsEgress.FD(), Name: "other", DirectAction: true}
		if err := netlink.FilterAdd(other); err != nil {
			t.Error(err)
			return
		}
		m.opts.Bindings = r
		m.follow()
		if got := m.Attached(); got["hs0"] != "tc" {
			t.Errorf("attached %v, want hs0 by tc", got)
		}
		prios := func(parent uint32) []uint16 {
			fs, err := netlink.FilterList(l, parent)
			if err != nil {
				t.Error(err)
			}
			var out []uint16
			for _, f := range fs {
				out = append(out, f.Attrs().Priority)
			}
			slices.Sort(out)
			return out
		}
		if got := prios(netlink.HANDLE_MIN_INGRESS); !slices.Equal(got, []uint16{4, 5}) {
			t.Errorf("ingress filter priorities %v, want ours (4) before the other (5)", got)
		}
		if got := prios(netlink.HANDLE_MIN_EGRESS); !slices.Equal(got, []uint16{1}) {
			t.Errorf("egress filter priorities %v, want ours alone", got)
		}
		m.detachAll()
		if got := prios(netlink.HANDLE_MIN_INGRESS); !slices.Equal(got, []uint16{5}) {
			t.Errorf("after detach, ingress filter priorities %v, want only the other one (5)", got)
		}
		if got := prios(netlink.HANDLE_MIN_EGRESS); len(got) != 0 {
			t.Errorf("after detach, egress filters %v", got)
		}

		// A killed agent's filters stay (filters are not closed with their
		// process): the next agent removes them, and only them.
		m.Attach()
		m.att = map[uint32]*attachment{} // "killed": forgets without detaching
		m.Attach()
		if got := prios(netlink.HANDLE_MIN_INGRESS); !slices.Equal(got, []uint16{4, 5}) {
			t.Errorf("after a restart over leftovers, ingress filter priorities %v, want ours (4) and the other (5)", got)
		}
		if got := prios(netlink.HANDLE_MIN_EGRESS); !slices.Equal(got, []uint16{1}) {
			t.Errorf("after a restart over leftovers, egress filter priorities %v, want ours alone", got)
		}
		m.Detach()
	})
}

// TestDeviceVariants: a device with Ethernet headers gets the programs
// that read the flags in place, a device without (a TUN device here; GRE
// and IPIP alike) the generic ones, which count a SYN that arrives on it.
func TestDeviceVariants(t *testing.T) {
	inNetns(t, func() {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("opening /dev/net/tun: %v", err)
			return
		}
		tun := os.NewFile(uintptr(fd), "tun")
		defer tun.Close()
		ifr, err := unix.NewIfreq("hstun0")
		if err != nil {
			t.Error(err)
			return
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			t.Errorf("TUNSETIFF: %v", err)
			return
		}
		var links []bindings.Link
		var bs []bindings.Binding
		idx := map[string]uint32{}
		for _, name := range []string{"hs0", "hstun0"} {
			l, err := netlink.LinkByName(name)
			if err == nil {
				err = netlink.LinkSetUp(l)
			}
			if err != nil {
				t.Error(err)
				return
			}
			idx[name] = uint32(l.Attrs().Index)
			links = append(links, bindings.Link{Index: idx[name], Name: name})
			bs = append(bs, bindings.Binding{Device: name, Tag: "t"})
		}
		r := bindings.NewResolver(bindings.Spec{Bindings: bs}, nil)
		r.SetLinks(links)
		m := &Monitor{opts: Options{Bindings: r}, log: discard(), att: map[uint32]*attachment{}, known: map[uint32]device{}}
		if err := m.loadOnly(); err != nil {
			t.Error(err)
			return
		}
		defer m.objs.Close()
		if err := m.setPorts(Config{Ports: []uint16{80}}); err != nil {
			t.Error(err)
			return
		}
		m.Attach()
		defer m.Detach()
		for dev, want := range map[string][2]string{"hs0": {"ipng_hs_ingress", "ipng_hs_egress"}, "hstun0": {"ipng_hs_in_l3", "ipng_hs_out_l3"}} {
			for i, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				res, err := link.QueryPrograms(link.QueryOptions{Target: int(idx[dev]), Attach: at})
				if err != nil || len(res.Programs) != 1 {
					t.Errorf("%s %v: programs %+v, %v; want one", dev, at, res, err)
					continue
				}
				p, err := ebpf.NewProgramFromID(res.Programs[0].ID)
				if err != nil {
					t.Error(err)
					continue
				}
				info, err := p.Info()
				p.Close()
				if err != nil || info.Name != want[i] {
					t.Errorf("%s %v: program %q (%v), want %s", dev, at, info.Name, err, want[i])
				}
			}
		}
		// An ACK and a SYN to port 80 arrive on the TUN device (an IPv4
		// packet without a link-layer header).
		for _, flags := range []byte{0x10, 0x02} {
			if _, err := tun.Write(frame{flags: flags, src: 40000, dst: 80}.bytes()[14:]); err != nil {
				t.Errorf("writing to the TUN device: %v", err)
				return
			}
		}
		// Received in the writer's context unless the kernel queues it:
		// wait for the count, boundedly.
		var cs []count
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if cs, err = readCounts(m.objs.IpngHsCounts); err != nil || len(cs) > 0 {
				break
			}
		}
		if err != nil {
			t.Error(err)
		}
		want := fmt.Sprintf("[{ifindex %d port 80 family 4 vip 192.0.2.10: {1 0 0}}]", idx["hstun0"])
		var got []string
		for _, c := range cs {
			got = append(got, fmt.Sprintf("{ifindex %d port %d family %d vip %s: %v}", c.key.Ifindex, c.key.Port, c.key.Family,
				netip.AddrFrom16(c.key.Vip).Unmap(), c.Totals))
		}
		if fmt.Sprint(got) != want {
			t.Errorf("counted %v, want %s", got, want)
		}
	})
}
