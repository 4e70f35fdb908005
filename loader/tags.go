package loader

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/family"
)

// TagTable gives source tags ids that stay stable across reloads and agent
// restarts (ipng_tag_names is pinned), and keeps ipng_ifaces telling the
// program which tag and device name each (ifindex, family) of the agent's
// network namespace has. The program copies them into the stamp at accept,
// so that a connection keeps the tag its interface had then, whatever
// happens before its requests are counted. Name is lock-free; Sync is
// serialized.
type TagTable struct {
	names, ifaces, slots *ebpf.Map

	mu     sync.Mutex
	byName map[string]uint32
	next   uint32
	mirror map[ipngbpf.SockopsIpngIfaceKey]ipngbpf.SockopsIpngIface // what ipng_ifaces holds
	full   bool                                                     // ipng_tag_names was found full (logged once by the caller)

	byID atomic.Pointer[map[uint32]string] // copy on write
}

// NewTagTable reads the tag names pinned by earlier agents from m.
func NewTagTable(m *Maps) (*TagTable, error) {
	if m.TagNames == nil || m.Ifaces == nil || m.IfaceSlots == nil {
		return nil, errors.New("tag table needs the program's ipng_tag_names, ipng_ifaces and ipng_iface_slots maps")
	}
	names, err := ReadTagNames(m)
	if err != nil {
		return nil, err
	}
	t := &TagTable{names: m.TagNames, ifaces: m.Ifaces, slots: m.IfaceSlots, byName: make(map[string]uint32, len(names)),
		next: 1, mirror: map[ipngbpf.SockopsIpngIfaceKey]ipngbpf.SockopsIpngIface{}}
	for id, name := range names {
		t.byName[name] = id
		t.next = max(t.next, id+1)
	}
	t.byID.Store(&names)
	// What an earlier agent told the program about interfaces stays until
	// the first Sync corrects it (so that no connection goes untagged in
	// between).
	var (
		key ipngbpf.SockopsIpngIfaceKey
		val ipngbpf.SockopsIpngIface
	)
	it := m.Ifaces.Iterate()
	for it.Next(&key, &val) {
		t.mirror[key] = val
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", PinIfaces, err)
	}
	// The slots say what ipng_ifaces says (they were created empty by an
	// upgrade, or a write failed).
	var (
		cursor ebpf.MapBatchCursor
		keys   = make([]uint32, slots)
		vals   = make([]ipngbpf.SockopsIpngIface, slots)
		read   int
	)
	for read < slots {
		n, err := m.IfaceSlots.BatchLookup(&cursor, keys[read:], vals[read:], nil)
		read += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", PinIfaceSlots, err)
		}
	}
	want := make([]ipngbpf.SockopsIpngIface, slots)
	for k, v := range t.mirror {
		if i, ok := slotOf(k); ok {
			want[i] = v
		}
	}
	for i := range read {
		if k := keys[i]; k < slots && vals[i] != want[k] {
			if err := m.IfaceSlots.Put(&k, &want[k]); err != nil {
				return nil, fmt.Errorf("writing %s: %w", PinIfaceSlots, err)
			}
		}
	}
	return t, nil
}

// slots is the size of ipng_iface_slots: (ifindex, family) of ifindexes
// below slots / 2 are also written there, at slotOf.
const slots = 8192

func slotOf(k ipngbpf.SockopsIpngIfaceKey) (uint32, bool) {
	if k.Ifindex >= slots/2 {
		return 0, false
	}
	i := k.Ifindex * 2
	if k.Family == uint32(family.IPv6) {
		i++
	}
	return i, true
}

// putIface writes (k, v) to ipng_ifaces and, for a small ifindex, to its
// slot; v zero deletes it. The slot is written after the hash when adding
// and cleared before it when deleting: the program reads the slot first
// and the hash when the slot is empty. (An array element is copied in
// place, not replaced: a connection accepted during the copy of a changed
// entry can get the new tag with the old bound flag or device.)
func (t *TagTable) putIface(k ipngbpf.SockopsIpngIfaceKey, v ipngbpf.SockopsIpngIface) error {
	i, slotted := slotOf(k)
	if v == (ipngbpf.SockopsIpngIface{}) {
		if slotted {
			if err := t.slots.Put(&i, &v); err != nil {
				return err
			}
		}
		if err := t.ifaces.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
		return nil
	}
	if err := t.ifaces.Put(&k, &v); err != nil {
		return err
	}
	if slotted {
		return t.slots.Put(&i, &v)
	}
	return nil
}

// ReadTagNames reads tag id → name from the pinned map (for readers such as
// `ipng-stats conns`).
func ReadTagNames(m *Maps) (map[uint32]string, error) {
	out := map[uint32]string{}
	var (
		id  uint32
		raw ipngbpf.SockopsIpngTagName
	)
	it := m.TagNames.Iterate()
	for it.Next(&id, &raw) {
		out[id] = cString(raw.Name[:])
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", PinTagNames, err)
	}
	return out, nil
}

// Name returns the tag of id.
func (t *TagTable) Name(id uint32) (string, bool) {
	name, ok := (*t.byID.Load())[id]
	return name, ok
}

// Iface is what the program is told about one interface of the agent's
// network namespace and one family: the tag its connections get at accept.
type Iface struct {
	Ifindex uint32
	Family  family.Family // IPv4 or IPv6
	Device  string
	Tag     string
	Bound   bool // a binding matched (false: the default tag)
}

// Sync tells the program the tag and device of every interface and family
// of ifaces (the whole current set: package connstats builds it from each
// new bindings table), and forgets the ones ifaces no longer has. Only
// entries that changed are written.
func (t *TagTable) Sync(ifaces []Iface) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	want := make(map[ipngbpf.SockopsIpngIfaceKey]ipngbpf.SockopsIpngIface, len(ifaces))
	var errs []error
	for _, f := range ifaces {
		id, err := t.idLocked(f.Tag)
		if err != nil {
			errs = append(errs, err)
			continue // the program stamps tag 0: resolved when read
		}
		v := ipngbpf.SockopsIpngIface{TagId: id}
		if f.Bound {
			v.Bound = 1
		}
		putCString(v.Device[:], f.Device)
		want[ipngbpf.SockopsIpngIfaceKey{Ifindex: f.Ifindex, Family: uint32(f.Family)}] = v
	}
	for k := range t.mirror {
		if _, ok := want[k]; ok {
			continue
		}
		if err := t.putIface(k, ipngbpf.SockopsIpngIface{}); err != nil {
			errs = append(errs, fmt.Errorf("deleting interface %d from %s: %w", k.Ifindex, PinIfaces, err))
			continue
		}
		delete(t.mirror, k)
	}
	for k, v := range want {
		if old, ok := t.mirror[k]; ok && old == v {
			continue
		}
		if err := t.putIface(k, v); err != nil {
			errs = append(errs, fmt.Errorf("writing interface %d to %s: %w", k.Ifindex, PinIfaces, err))
			continue
		}
		t.mirror[k] = v
	}
	return errors.Join(errs...)
}

// idLocked returns the id of tag, giving it the next free one.
func (t *TagTable) idLocked(tag string) (uint32, error) {
	if id, ok := t.byName[tag]; ok {
		return id, nil
	}
	if t.full {
		return 0, fmt.Errorf("tag %q has no id: %s is full", tag, PinTagNames)
	}
	var raw ipngbpf.SockopsIpngTagName
	if len(tag) >= len(raw.Name) {
		return 0, fmt.Errorf("tag %q is longer than %d bytes", tag, len(raw.Name)-1)
	}
	putCString(raw.Name[:], tag)
	id := t.next
	if err := t.names.Update(&id, &raw, ebpf.UpdateNoExist); err != nil {
		t.full = true
		return 0, fmt.Errorf("giving tag %q an id in %s: %w", tag, PinTagNames, err)
	}
	t.next++
	t.byName[tag] = id
	next := make(map[uint32]string, len(t.byName))
	for name, i := range t.byName {
		next[i] = name
	}
	t.byID.Store(&next)
	return id, nil
}

func putCString(dst []int8, s string) {
	for i := range dst {
		dst[i] = 0
	}
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

// PinnedTagNames names tag ids for a process that reads the pins but does
// not own the TagTable (a separate ingest, `ipng-stats conns`): it caches
// ipng_tag_names and reads it again, at most once a second, when asked for
// an id it does not know. It is not safe for concurrent use.
func (m *Maps) PinnedTagNames() func(uint32) (string, bool) {
	var (
		names map[uint32]string
		last  time.Time
	)
	return func(id uint32) (string, bool) {
		if name, ok := names[id]; ok {
			return name, true
		}
		if time.Since(last) < time.Second {
			return "", false
		}
		last = time.Now()
		if n, err := ReadTagNames(m); err == nil {
			names = n
		}
		name, ok := names[id]
		return name, ok
	}
}
