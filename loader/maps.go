package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ipng/ipng-stats/bindings"
	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// Maps are the program's maps, either owned by a loaded Program or opened
// read-only from pins by OpenPinned.
type Maps struct {
	Sk       *ebpf.Map // SK_STORAGE: socket fd → stamp; nil from Program.Maps when not written (Config.SkStorage)
	ByCookie *ebpf.Map // socket cookie → stamp, live sockets
	ByTuple  *ebpf.Map // (netns cookie, 4-tuple) → stamp, outlives the socket
	Counters *ebpf.Map // per-CPU program counters
	Ifaces   *ebpf.Map // (ifindex, family) → tag id and device, written by the agent; nil when opened read-only
	TagNames *ebpf.Map // tag id → tag name, written by the agent
	Conns    *ebpf.Map // per-CPU connections opened and closed per (tag id, VIP)
	// TupleRing and TupleHead: the hashes of the keys written to ByTuple, in
	// stamping order (TupleHistory reads them); nil when ByTuple is.
	TupleRing, TupleHead *ebpf.Map
	owned                bool
}

// OpenPinned opens the maps pinned in dir read-only. It needs no capability
// once the pins are readable (the agent makes them 0644).
func OpenPinned(dir string) (*Maps, error) {
	m := &Maps{owned: true}
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	for _, t := range []struct {
		name string
		dst  **ebpf.Map
	}{{PinSk, &m.Sk}, {PinByCookie, &m.ByCookie}, {PinByTuple, &m.ByTuple}, {PinCounters, &m.Counters},
		{PinTagNames, &m.TagNames}, {PinConns, &m.Conns}, {PinTupleRing, &m.TupleRing}, {PinTupleHead, &m.TupleHead}} {
		mp, err := ebpf.LoadPinnedMap(filepath.Join(dir, t.name), ro)
		if errors.Is(err, os.ErrPermission) {
			m.Close()
			return nil, fmt.Errorf("opening pinned map %s: %w (the pins are world-readable, but systemd mounts %s with mode 0700: run as root, or make it traversable with chmod o+x %s)", t.name, err, DefaultBPFFS, DefaultBPFFS)
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("opening pinned map %s: %w (is `ipng-stats agent` running with bpf.pin_dir %s?)", t.name, err, dir)
		}
		*t.dst = mp
	}
	return m, nil
}

// Close closes maps opened by OpenPinned; it does nothing for a Program's maps.
func (m *Maps) Close() error {
	if !m.owned {
		return nil
	}
	var errs []error
	for _, mp := range []*ebpf.Map{m.Sk, m.ByCookie, m.ByTuple, m.Counters, m.Ifaces, m.TagNames, m.Conns, m.TupleRing, m.TupleHead} {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}

// Stamp is what the program recorded about one accepted socket.
type Stamp struct {
	Cookie      uint64
	NetnsCookie uint64
	Local       netip.AddrPort // the VIP and port the client connected to
	Remote      netip.AddrPort
	Ifindex     uint32
	Family      bindings.Family
	Source      string        // "skb" or "rx_dst": where the ifindex was read
	StampedAt   time.Duration // CLOCK_MONOTONIC at accept
	// TagID is the source tag of the interface's binding at accept
	// (TagTable.Name names it); 0 when the program did not know the
	// interface (another network namespace, or a link the agent had not
	// yet seen): then the tag is resolved from Ifindex when it is read.
	TagID uint32
	// Bound: a binding matched at accept (false: the default tag).
	Bound bool
	// Device is the interface's name at accept; "" when TagID is 0.
	Device string
}

// DecodeStamp converts the raw map value.
func DecodeStamp(r *ipngbpf.SockopsIpngStamp) Stamp {
	return Stamp{
		Cookie:      r.Cookie,
		NetnsCookie: r.Tuple.NetnsCookie,
		Local:       netip.AddrPortFrom(unmap(r.Tuple.LocalAddr), r.Tuple.LocalPort),
		Remote:      netip.AddrPortFrom(unmap(r.Tuple.RemoteAddr), r.Tuple.RemotePort),
		Ifindex:     r.Ifindex,
		Family:      bindings.Family(r.Family),
		Source:      sourceName(r.Source),
		StampedAt:   time.Duration(r.StampedNs),
		TagID:       r.TagId,
		Bound:       r.Bound != 0,
		Device:      cString(r.Device[:]),
	}
}

// cString is the NUL-terminated string in b.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func unmap(a [16]byte) netip.Addr { return netip.AddrFrom16(a).Unmap() }

func sourceName(s ipngbpf.SockopsIpngSource) string {
	switch s {
	case ipngbpf.SockopsIpngSourceIPNG_SOURCE_SKB:
		return "skb"
	case ipngbpf.SockopsIpngSourceIPNG_SOURCE_RX_DST:
		return "rx_dst"
	}
	return "unknown"
}

// TupleKey builds the ipng_by_tuple key; IPv4 addresses are stored v4-mapped,
// so an IPv4 connection has the same key whether the listener was AF_INET or
// a dual-stack AF_INET6 socket.
func TupleKey(netnsCookie uint64, local, remote netip.AddrPort) ipngbpf.SockopsIpngTuple {
	return ipngbpf.SockopsIpngTuple{
		NetnsCookie: netnsCookie,
		LocalAddr:   local.Addr().As16(),
		RemoteAddr:  remote.Addr().As16(),
		LocalPort:   local.Port(),
		RemotePort:  remote.Port(),
	}
}

// LookupTuple finds the stamp of a connection by its addresses.
func (m *Maps) LookupTuple(netnsCookie uint64, local, remote netip.AddrPort) (Stamp, bool, error) {
	key := TupleKey(netnsCookie, local, remote)
	var raw ipngbpf.SockopsIpngStamp
	if m.ByTuple == nil {
		return Stamp{}, false, errors.New("looking up 4-tuple: the 4-tuple map is off (nginx ingest disabled)")
	}
	if err := m.ByTuple.Lookup(&key, &raw); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Stamp{}, false, nil
		}
		return Stamp{}, false, fmt.Errorf("looking up 4-tuple: %w", err)
	}
	return DecodeStamp(&raw), true, nil
}

// LiveStamps lists the stamps of sockets that are still open.
func (m *Maps) LiveStamps() ([]Stamp, error) {
	var (
		out    []Stamp
		cookie uint64
		raw    ipngbpf.SockopsIpngStamp
	)
	it := m.ByCookie.Iterate()
	for it.Next(&cookie, &raw) {
		out = append(out, DecodeStamp(&raw))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterating %s: %w", PinByCookie, err)
	}
	return out, nil
}
