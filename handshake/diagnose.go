package handshake

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/loader"
)

// Stages a Finding can name.
const (
	StageAnswer = "answer" // SYNs arrive, the stack does not answer
	StageEgress = "egress" // SYN-ACKs leave through the bound device
	StageReturn = "return" // SYN-ACKs sent, handshakes do not complete
)

// Sample is the handshake stages counted so far, per (tag, device), and the
// handshakes completed per tag.
type Sample struct {
	Devices   map[string]map[string]Totals // tag → device → totals
	Completed map[string]uint64            // tag → handshakes completed
}

// Finding is one stage that loses connections.
type Finding struct {
	Tag, Device, Stage, Message string
}

// sample syncs the counts and copies the per-device totals.
func (m *Monitor) sample() Sample {
	if err := m.Sync(); err != nil {
		m.log.Warn("reading the handshake counts", "err", err)
	}
	s := Sample{Devices: map[string]map[string]Totals{}}
	m.mu.Lock()
	for k, t := range m.byDevice {
		s.put(k.tag, k.device, *t)
	}
	m.mu.Unlock()
	if m.opts.Completed != nil {
		c, err := m.opts.Completed()
		if err != nil {
			m.log.Warn("reading the completed handshakes", "err", err)
		}
		s.Completed = c
	}
	return s
}

func (s *Sample) put(tag, dev string, t Totals) {
	if s.Devices[tag] == nil {
		s.Devices[tag] = map[string]Totals{}
	}
	old := s.Devices[tag][dev]
	old.add(t)
	s.Devices[tag][dev] = old
}

// minus is what happened between p and s.
func (s Sample) minus(p Sample) Sample {
	out := Sample{Devices: map[string]map[string]Totals{}, Completed: map[string]uint64{}}
	for tag, devs := range s.Devices {
		for dev, t := range devs {
			o := p.Devices[tag][dev]
			out.put(tag, dev, Totals{sub(t.SynReceived, o.SynReceived), sub(t.SynackSent, o.SynackSent),
				sub(t.SynackWrongEgress, o.SynackWrongEgress)})
		}
	}
	for tag, n := range s.Completed {
		out.Completed[tag] = sub(n, p.Completed[tag])
	}
	return out
}

// Diagnose names the stages that lose connections: SYN-ACKs that leave
// through a bound device (any), SYNs of which fewer than half are answered,
// SYN-ACKs of which fewer than half complete a handshake. Completed
// handshakes are compared only when s.Completed is set.
func Diagnose(s Sample) []Finding {
	var out []Finding
	tags := make([]string, 0, len(s.Devices))
	for tag := range s.Devices {
		tags = append(tags, tag)
	}
	slices.Sort(tags)
	for _, tag := range tags {
		devs := s.Devices[tag]
		names := make([]string, 0, len(devs))
		var sum Totals
		for dev, t := range devs {
			names = append(names, dev)
			sum.add(t)
		}
		slices.Sort(names)
		for _, dev := range names {
			t := devs[dev]
			if t.SynackWrongEgress > 0 {
				out = append(out, Finding{Tag: tag, Device: dev, Stage: StageEgress, Message: fmt.Sprintf(
					"SYN-ACKs leave through %s (%d of them): a listener is bound to the device or a route points back into the tunnel",
					dev, t.SynackWrongEgress)})
			}
			if t.SynReceived > 0 && t.SynackSent*2 < t.SynReceived {
				out = append(out, Finding{Tag: tag, Device: dev, Stage: StageAnswer, Message: fmt.Sprintf(
					"SYNs arrive on %s (%d) but the stack does not answer (%d SYN-ACKs): rp_filter on %s, VIP not configured, or no listener",
					dev, t.SynReceived, t.SynackSent, dev)})
			}
		}
		if s.Completed != nil && sum.SynackSent > 0 && s.Completed[tag]*2 < sum.SynackSent {
			out = append(out, Finding{Tag: tag, Device: strings.Join(names, ","), Stage: StageReturn, Message: fmt.Sprintf(
				"SYN-ACKs sent (%d) but handshakes do not complete (%d): the return path drops them",
				sum.SynackSent, s.Completed[tag])})
		}
	}
	return out
}

// Completed sums the sock_ops program's connections opened per source tag:
// names resolves tag ids, table the connections of tag id 0.
func Completed(counts []loader.ConnCount, names func(uint32) (string, bool), table *bindings.Table) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range counts {
		tag := ""
		if c.Key.TagID != 0 {
			tag, _ = names(c.Key.TagID)
		}
		if tag == "" {
			tag = table.Lookup(c.Key.Ifindex, c.Key.Family).Tag
		}
		out[tag] += c.Opened
	}
	return out
}

// ReadPinned reads the counts a running agent pinned in pinDir and the
// completed handshakes of its sock_ops maps, resolving interfaces with
// table (the caller's network namespace must be the agent's).
func ReadPinned(pinDir string, table *bindings.Table) (Sample, error) {
	s := Sample{Devices: map[string]map[string]Totals{}}
	mp, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, PinCounts), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return s, fmt.Errorf("opening the handshake counts (is the agent running?): %w", err)
	}
	defer mp.Close()
	counts, err := readCounts(mp)
	if err != nil {
		return s, err
	}
	for _, c := range counts {
		fam := bindings.Family(c.key.Family)
		r := table.Lookup(c.key.Ifindex, fam)
		if !r.Bound {
			continue
		}
		s.put(r.Tag, r.Device, c.Totals)
	}
	maps, err := loader.OpenPinned(pinDir)
	if err != nil {
		return s, err
	}
	defer maps.Close()
	conns, err := maps.ReadConns()
	if err != nil {
		return s, err
	}
	s.Completed = Completed(conns, maps.PinnedTagNames(), table)
	return s, nil
}
