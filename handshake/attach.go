package handshake

import (
	"errors"
	"fmt"

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
	links   []link.Link
	filters []*netlink.BpfFilter
	qdisc   bool // we added the clsact qdisc
}

// attach puts the ingress program first and the egress program last on the
// device: SYNs are counted before any other program can drop them, and
// SYN-ACKs as they finally leave. Programs already attached keep their
// order; nothing is replaced.
func (m *Monitor) attach(ifindex uint32, name string) (*attachment, error) {
	a := &attachment{name: name, ifindex: ifindex, mode: "tcx"}
	if !m.cfg.Legacy {
		in, err := link.AttachTCX(link.TCXOptions{Interface: int(ifindex), Program: m.objs.IpngHsIngress,
			Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		if err == nil {
			a.links = append(a.links, in)
			out, err := link.AttachTCX(link.TCXOptions{Interface: int(ifindex), Program: m.objs.IpngHsEgress,
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
	if err := m.attachLegacy(a); err != nil {
		m.detach(a)
		return nil, err
	}
	return a, nil
}

// attachLegacy adds the programs as direct-action cls_bpf filters of a
// clsact qdisc (kernels before tcx, 6.6). The ingress filter gets a
// priority below every existing one (it runs first), the egress filter one
// above (it runs last); NLM_F_EXCL makes sure no filter is replaced.
func (m *Monitor) attachLegacy(a *attachment) error {
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
		first  bool
	}{
		{netlink.HANDLE_MIN_INGRESS, m.objs.IpngHsIngress, "ipng_hs_ingress", true},
		{netlink.HANDLE_MIN_EGRESS, m.objs.IpngHsEgress, "ipng_hs_egress", false},
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
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == dir.name {
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
