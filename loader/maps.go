package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/family"
)

// Maps are the program's maps, either owned by a loaded Program or opened
// read-only from pins by OpenPinned.
type Maps struct {
	Sk       *ebpf.Map // SK_STORAGE: socket fd → stamp; nil from Program.Maps when not written (Config.SkStorage)
	ByCookie *ebpf.Map // socket cookie → stamp, live sockets
	Counters *ebpf.Map // per-CPU program counters
	Ifaces   *ebpf.Map // (ifindex, family) → tag id and device, written by the agent; nil when opened read-only
	// IfaceSlots: Ifaces of small ifindexes, by ifindex * 2 + (family == 6); nil when opened read-only
	IfaceSlots *ebpf.Map
	TagNames   *ebpf.Map // tag id → tag name, written by the agent
	Series     *ebpf.Map // (tag id, VIP) → index in Conns
	Conns      *ebpf.Map // per-CPU connections opened and closed, by series index
	// TupleStamps, TupleRing and TupleHead: the stamps written for readers
	// that find connections by 4-tuple (NewTupleStamps reads them) and the
	// hashes of their 4-tuples, in stamping order (TupleHistory reads
	// them), and the next sequence number; nil when the nginx ingest is off.
	TupleStamps, TupleRing, TupleHead *ebpf.Map
	owned                             bool
}

// OpenPinned opens the maps pinned in dir read-only (the ring of stamps for
// the nginx ingest read-write when the caller may: see NewTupleStamps). It
// needs no capability for root or a member of the pin directory's group
// (the agent makes the maps PinMapMode, the directory PinDirMode).
func OpenPinned(dir string) (*Maps, error) {
	m := &Maps{owned: true}
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	for _, t := range []struct {
		name string
		dst  **ebpf.Map
	}{{PinSk, &m.Sk}, {PinByCookie, &m.ByCookie}, {PinTupleStamps, &m.TupleStamps}, {PinCounters, &m.Counters},
		{PinTagNames, &m.TagNames}, {PinSeries, &m.Series}, {PinConns, &m.Conns}, {PinTupleRing, &m.TupleRing}, {PinTupleHead, &m.TupleHead}} {
		var (
			mp  *ebpf.Map
			err error
		)
		if t.name == PinTupleStamps {
			// Mapping the ring of stamps into memory (NewTupleStamps)
			// needs a writable descriptor, though nothing writes it: a
			// read-only one cannot be mapped shared. Read-only for
			// callers that may not write the pin (`conns` as a user).
			mp, err = ebpf.LoadPinnedMap(filepath.Join(dir, t.name), nil)
			if errors.Is(err, os.ErrPermission) {
				mp, err = ebpf.LoadPinnedMap(filepath.Join(dir, t.name), ro)
			}
		} else {
			mp, err = ebpf.LoadPinnedMap(filepath.Join(dir, t.name), ro)
		}
		if errors.Is(err, os.ErrPermission) {
			m.Close()
			return nil, fmt.Errorf("opening pinned map %s: %w (%s)", t.name, err, permissionHint(dir))
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
	for _, mp := range []*ebpf.Map{m.Sk, m.ByCookie, m.TupleStamps, m.Counters, m.Ifaces, m.IfaceSlots, m.TagNames, m.Series, m.Conns, m.TupleRing, m.TupleHead} {
		if mp != nil {
			errs = append(errs, mp.Close())
		}
	}
	return errors.Join(errs...)
}

// Stamp is what the program recorded about one accepted socket. It holds
// no pointer to memory of its own (Device is an array), so that the
// lookups copy it out without allocating.
type Stamp struct {
	Cookie      uint64
	NetnsCookie uint64
	Local       netip.AddrPort // the VIP and port the client connected to
	Remote      netip.AddrPort
	Ifindex     uint32
	Family      family.Family
	Source      Source        // where the ifindex was read
	StampedAt   time.Duration // CLOCK_MONOTONIC at accept
	// TagID is the source tag of the interface's binding at accept
	// (TagTable.Name names it); 0 when the program did not know the
	// interface (another network namespace, or a link the agent had not
	// yet seen): then the tag is resolved from Ifindex when it is read.
	TagID uint32
	// Bound: a binding matched at accept (false: the default tag).
	Bound bool
	// Device is the interface's name at accept; empty when TagID is 0.
	Device Device
}

// Device is an interface name as the program stores it: NUL-padded.
type Device [len(ipngbpf.SockopsIpngStamp{}.Device)]byte

// String is the name; it allocates.
func (d *Device) String() string { return string(d[:d.len()]) }

// Is reports whether the name is s, without allocating.
func (d *Device) Is(s string) bool { return d.len() == len(s) && string(d[:len(s)]) == s }

func (d *Device) len() int {
	for i, c := range d {
		if c == 0 {
			return i
		}
	}
	return len(d)
}

// Source says where the program read a connection's ifindex.
type Source uint8

const (
	SourceUnknown Source = iota
	SourceSKB            // the SYN's skb (the normal case)
	SourceRxDst          // the socket's cached receive route
)

func (s Source) String() string {
	switch s {
	case SourceSKB:
		return "skb"
	case SourceRxDst:
		return "rx_dst"
	}
	return "unknown"
}

// decodeStamp converts the raw map value.
func decodeStamp(r *ipngbpf.SockopsIpngStamp, s *Stamp) {
	*s = Stamp{
		Cookie:      r.Cookie,
		NetnsCookie: r.Tuple.NetnsCookie,
		Local:       netip.AddrPortFrom(unmap(r.Tuple.LocalAddr), r.Tuple.LocalPort),
		Remote:      netip.AddrPortFrom(unmap(r.Tuple.RemoteAddr), r.Tuple.RemotePort),
		Ifindex:     r.Ifindex,
		Family:      family.Family(r.Family),
		Source:      decodeSource(r.Source),
		StampedAt:   time.Duration(r.StampedNs),
		TagID:       r.TagId,
		Bound:       r.Bound != 0,
	}
	for i, c := range r.Device {
		s.Device[i] = byte(c)
	}
}

func decodeSource(s ipngbpf.SockopsIpngSource) Source {
	switch s {
	case ipngbpf.SockopsIpngSourceIPNG_SOURCE_SKB:
		return SourceSKB
	case ipngbpf.SockopsIpngSourceIPNG_SOURCE_RX_DST:
		return SourceRxDst
	}
	return SourceUnknown
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

// tupleKey builds a stamp's 4-tuple key; IPv4 addresses are stored
// v4-mapped, so an IPv4 connection has the same key whether the listener was
// AF_INET or a dual-stack AF_INET6 socket.
func tupleKey(netnsCookie uint64, local, remote netip.AddrPort) ipngbpf.SockopsIpngTuple {
	return ipngbpf.SockopsIpngTuple{
		NetnsCookie: netnsCookie,
		LocalAddr:   local.Addr().As16(),
		RemoteAddr:  remote.Addr().As16(),
		LocalPort:   local.Port(),
		RemotePort:  remote.Port(),
	}
}

// lookupBuf holds a key and a raw value. Handing cilium/ebpf
// unsafe.Pointers avoids its marshalling, but a pointer passed as `any`
// escapes, so the buffers are pooled to keep the lookups free of
// allocations.
type lookupBuf struct {
	fd     uint32
	cookie uint64
	tuple  ipngbpf.SockopsIpngTuple
	raw    ipngbpf.SockopsIpngStamp
}

var lookupBufs = sync.Pool{New: func() any { return new(lookupBuf) }}

// lookup looks key up in m and decodes the stamp into s. found is false
// (and err nil) when m has no entry for key.
func lookup(m *ebpf.Map, key unsafe.Pointer, buf *lookupBuf, s *Stamp) (found bool, err error) {
	if err := m.Lookup(key, unsafe.Pointer(&buf.raw)); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil
		}
		return false, err
	}
	decodeStamp(&buf.raw, s)
	return true, nil
}

// LookupFd finds the stamp of the accepted socket fd in the socket storage
// (ipng_sk), which the kernel resolves from the fd. It does not allocate.
func (m *Maps) LookupFd(fd int) (Stamp, bool, error) {
	var s Stamp
	if m.Sk == nil { // the program was loaded without socket storage
		return s, false, nil
	}
	buf := lookupBufs.Get().(*lookupBuf)
	defer lookupBufs.Put(buf)
	buf.fd = uint32(fd)
	found, err := lookup(m.Sk, unsafe.Pointer(&buf.fd), buf, &s)
	return s, found, err
}

// LookupCookie finds the stamp of a live socket by its cookie
// (SO_COOKIE) in ipng_by_cookie. It does not allocate.
func (m *Maps) LookupCookie(cookie uint64) (Stamp, bool, error) {
	var s Stamp
	buf := lookupBufs.Get().(*lookupBuf)
	defer lookupBufs.Put(buf)
	buf.cookie = cookie
	found, err := lookup(m.ByCookie, unsafe.Pointer(&buf.cookie), buf, &s)
	return s, found, err
}

// errNoTuples: the program was loaded without the 4-tuple map.
var errNoTuples = errors.New("looking up 4-tuple: the 4-tuple map is off (nginx ingest disabled)")

// LookupTuple finds the stamp of a connection by its addresses in the
// network namespace of netnsCookie among the last stamps the program wrote
// for the nginx ingest (ipng_tuple_stamps), which outlive the socket. It
// maps and indexes the whole ring for one lookup: readers that look up
// many connections keep a NewTupleStamps instead.
func (m *Maps) LookupTuple(netnsCookie uint64, local, remote netip.AddrPort) (Stamp, bool, error) {
	var s Stamp
	r, err := m.NewTupleStamps()
	if err != nil {
		return s, false, err
	}
	defer r.Close()
	if err := r.Sync(); err != nil {
		return s, false, fmt.Errorf("looking up 4-tuple: %w", err)
	}
	found, err := r.Lookup(netnsCookie, local, remote, &s)
	if err != nil {
		return s, false, fmt.Errorf("looking up 4-tuple: %w", err)
	}
	return s, found, nil
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
		var s Stamp
		decodeStamp(&raw, &s)
		out = append(out, s)
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterating %s: %w", PinByCookie, err)
	}
	return out, nil
}

// NewTupleMaps returns Maps with only unpinned 4-tuple rings for entries
// stamps (rounded up to a power of two), attached to no program: what the
// tests of a 4-tuple reader (the nginx ingest) stamp by hand with PutTuple.
// Close it after use. It needs CAP_BPF.
func NewTupleMaps(entries uint32) (*Maps, error) {
	ring := tupleRingSize(entries)
	m := &Maps{owned: true}
	for _, t := range []struct {
		dst  **ebpf.Map
		spec ebpf.MapSpec
	}{
		{&m.TupleStamps, ebpf.MapSpec{Type: ebpf.Array, Flags: unix.BPF_F_MMAPABLE, KeySize: 4,
			ValueSize: uint32(unsafe.Sizeof(ipngbpf.SockopsIpngStampSlot{})), MaxEntries: ring / TupleRingFactor}},
		{&m.TupleRing, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: uint32(unsafe.Sizeof(ipngbpf.SockopsIpngRingSlot{})), MaxEntries: ring}},
		{&m.TupleHead, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}},
	} {
		mp, err := ebpf.NewMap(&t.spec)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("creating a 4-tuple map: %w", err)
		}
		*t.dst = mp
	}
	return m, nil
}

// PutTuple appends s to the 4-tuple rings under (s.NetnsCookie, s.Local,
// s.Remote), as the program does at accept (for tests; see NewTupleMaps).
func (m *Maps) PutTuple(s Stamp) error {
	k := tupleKey(s.NetnsCookie, s.Local, s.Remote)
	v := ipngbpf.SockopsIpngStamp{Tuple: k, Cookie: s.Cookie, StampedNs: uint64(s.StampedAt), Ifindex: s.Ifindex,
		Family: uint8(s.Family), TagId: s.TagID}
	switch s.Source {
	case SourceSKB:
		v.Source = ipngbpf.SockopsIpngSourceIPNG_SOURCE_SKB
	case SourceRxDst:
		v.Source = ipngbpf.SockopsIpngSourceIPNG_SOURCE_RX_DST
	}
	if s.Bound {
		v.Bound = 1
	}
	for i, c := range s.Device {
		v.Device[i] = int8(c)
	}
	var seq uint64
	if err := m.TupleHead.Lookup(uint32(0), &seq); err != nil {
		return err
	}
	ringIdx := uint32(seq % uint64(m.TupleRing.MaxEntries()))
	if err := m.TupleRing.Put(ringIdx, ipngbpf.SockopsIpngRingSlot{Hash: tupleHash(&k), Seq: seq + 1}); err != nil {
		return err
	}
	stampIdx := uint32(seq % uint64(m.TupleStamps.MaxEntries()))
	if err := m.TupleStamps.Put(stampIdx, ipngbpf.SockopsIpngStampSlot{Stamp: v, Seq: seq + 1}); err != nil {
		return err
	}
	return m.TupleHead.Put(uint32(0), seq+1)
}

// DeleteTuple clears the stamp of a connection from the ring of stamps, as
// being overwritten by later stamps does (for tests; see NewTupleMaps).
func (m *Maps) DeleteTuple(netnsCookie uint64, local, remote netip.AddrPort) error {
	k := tupleKey(netnsCookie, local, remote)
	var slot ipngbpf.SockopsIpngStampSlot
	for i := range m.TupleStamps.MaxEntries() {
		if err := m.TupleStamps.Lookup(i, &slot); err != nil {
			return err
		}
		if slot.Seq != 0 && slot.Stamp.Tuple == k {
			if err := m.TupleStamps.Put(i, ipngbpf.SockopsIpngStampSlot{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// permissionHint says who may read the pins in dir: root and the members of
// the directory's group, through a bpffs root that others can traverse.
func permissionHint(dir string) string {
	hint := "the pins are readable by root and by the members of the pin directory's group: run as root, or as a member of that group"
	var st unix.Stat_t
	if unix.Stat(dir, &st) == nil {
		name := strconv.FormatUint(uint64(st.Gid), 10)
		if g, err := user.LookupGroupId(name); err == nil {
			name = g.Name
		}
		hint = fmt.Sprintf("the pins are readable by root and by the members of group %s (the group of %s): run as root, or add the user to the group (adduser USER %s)", name, dir, name)
	}
	if unix.Stat(DefaultBPFFS, &st) == nil && st.Mode&0o001 == 0 && Below(dir, DefaultBPFFS) {
		hint += fmt.Sprintf("; %s is not traversable by other users (systemd mounts it with mode 0700): chmod o+x %s", DefaultBPFFS, DefaultBPFFS)
	}
	return hint
}
