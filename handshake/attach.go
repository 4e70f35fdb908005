package handshake

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// attachment is the tc programs of one device.
type attachment struct {
	name    string
	ifindex uint32
	mode    string // "tcx" or "tc" (clsact filter)
	headers string // "ethernet" or "l3": which program variant
	links   []link.Link
	filters []*netlink.BpfFilter
	qdisc   bool // we added the clsact qdisc
}

// progs are the tc programs of one header layout, with their names.
type progs struct {
	in, out         *ebpf.Program
	inName, outName string
}

// variant picks the programs for the device: the ones that read the TCP
// flags in place behind an Ethernet header for a device with Ethernet
// headers, the generic ones (headers read relative to the network header)
// for anything else, or when the device cannot be read.
func (m *Monitor) variant(ifindex uint32) (string, progs) {
	if l, err := netlink.LinkByIndex(int(ifindex)); err == nil && l.Attrs().EncapType == "ether" {
		return "ethernet", progs{m.objs.IpngHsIngress, m.objs.IpngHsEgress, "ipng_hs_ingress", "ipng_hs_egress"}
	}
	return "l3", progs{m.objs.IpngHsInL3, m.objs.IpngHsOutL3, "ipng_hs_in_l3", "ipng_hs_out_l3"}
}

// attach puts the ingress program first and the egress program last on the
// device: SYNs are counted before any other program can drop them, and
// SYN-ACKs as they finally leave. Programs already attached keep their
// order; nothing is replaced.
func (m *Monitor) attach(ifindex uint32, name string) (*attachment, error) {
	a := &attachment{name: name, ifindex: ifindex, mode: "tcx"}
	var p progs
	a.headers, p = m.variant(ifindex)
	if !m.cfg.Legacy {
		in, err := link.AttachTCX(link.TCXOptions{Interface: int(ifindex), Program: p.in,
			Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		if err == nil {
			a.links = append(a.links, in)
			out, err := link.AttachTCX(link.TCXOptions{Interface: int(ifindex), Program: p.out,
				Attach: ebpf.AttachTCXEgress, Anchor: link.Tail()})
			if err != nil {
				in.Close()
				return nil, fmt.Errorf("tcx egress: %w", err)
			}
			a.links = append(a.links, out)
			return a, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("tcx ingress: %w", err)
		}
	}
	a.mode = "tc"
	if err := m.attachLegacy(a, p); err != nil {
		m.detach(a)
		return nil, err
	}
	return a, nil
}

// attachLegacy adds the programs as direct-action cls_bpf filters of a
// clsact qdisc (kernels before tcx, 6.6). The ingress filter gets a
// priority below every existing one (it runs first), the egress filter one
// above (it runs last); NLM_F_EXCL makes sure no filter is replaced.
func (m *Monitor) attachLegacy(a *attachment, p progs) error {
	q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: int(a.ifindex),
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscAdd(q); err == nil {
		a.qdisc = true
	} else if !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding a clsact qdisc: %w", err)
	}
	for _, dir := range []struct {
		parent uint32
		prog   *ebpf.Program
		name   string
		names  []string // ours in this direction, of either variant
		first  bool
	}{
		{netlink.HANDLE_MIN_INGRESS, p.in, p.inName, []string{"ipng_hs_ingress", "ipng_hs_in_l3"}, true},
		{netlink.HANDLE_MIN_EGRESS, p.out, p.outName, []string{"ipng_hs_egress", "ipng_hs_out_l3"}, false},
	} {
		link, err := netlink.LinkByIndex(int(a.ifindex))
		if err != nil {
			return err
		}
		existing, err := netlink.FilterList(link, dir.parent)
		if err != nil {
			return fmt.Errorf("listing tc filters: %w", err)
		}
		// A filter is not closed with its process: remove what a killed
		// agent left behind (ours only, by name), keep everyone else's.
		kept := existing[:0]
		for _, f := range existing {
			if bf, ok := f.(*netlink.BpfFilter); ok && slices.Contains(dir.names, bf.Name) {
				if err := netlink.FilterDel(bf); err == nil {
					m.log.Info("removed a leftover handshake filter", "device", a.name, "priority", bf.Priority)
					continue
				}
			}
			kept = append(kept, f)
		}
		existing = kept
		prio := uint16(1)
		if len(existing) > 0 {
			lo, hi := uint16(0xffff), uint16(0)
			for _, f := range existing {
				p := f.Attrs().Priority
				lo, hi = min(lo, p), max(hi, p)
			}
			switch {
			case dir.first && lo > 1:
				prio = lo - 1
			case hi < 0xffff:
				prio = hi + 1
			default:
				return errors.New("no free tc filter priority")
			}
		}
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: int(a.ifindex), Parent: dir.parent,
			Handle: netlink.MakeHandle(0, 1), Protocol: unix.ETH_P_ALL, Priority: prio},
			Fd: dir.prog.FD(), Name: dir.name, DirectAction: true}
		if err := netlink.FilterAdd(f); err != nil {
			return fmt.Errorf("adding the %s tc filter: %w", dir.name, err)
		}
		a.filters = append(a.filters, f)
	}
	return nil
}

// detach removes what attach added. A device that is gone took its
// programs with it; errors are ignored.
func (m *Monitor) detach(a *attachment) {
	for _, l := range a.links {
		l.Close()
	}
	a.links = nil
	for _, f := range a.filters {
		netlink.FilterDel(f)
	}
	a.filters = nil
	if a.qdisc {
		// Only when no filter is left: someone else's would go with it.
		if l, err := netlink.LinkByIndex(int(a.ifindex)); err == nil {
			in, _ := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
			out, _ := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
			if len(in) == 0 && len(out) == 0 {
				netlink.QdiscDel(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: int(a.ifindex),
					Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"})
			}
		}
		a.qdisc = false
	}
}
