package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// TupleStamps finds the stamps of connections by their 4-tuple, for readers
// that learn of a connection late (the nginx ingest reads its access log
// after the socket closed). The program writes every stamp, in order, to a
// ring (ipng_tuple_stamps: slot = sequence number & (size − 1)); the reader
// has the ring memory-mapped and indexes the slots written since its last
// Sync by the hash of their 4-tuple, so a lookup makes no system call and
// does not allocate. A slot found through the index is checked against the
// whole 4-tuple and its sequence number, so a hash collision or a slot
// overwritten meanwhile is a miss, never another connection's stamp. A
// 4-tuple stamped more than Size() stamps before the lookup is gone from
// the ring (TupleHistory then tells it was stamped). Not safe for
// concurrent use.
type TupleStamps struct {
	head headMap // ipng_tuple_head
	mem  []byte
	size uint64
	next uint64 // the first sequence number not yet indexed
	last uint64 // the head read by the last Sync
	// The index, hash of the 4-tuple → latest sequence number, is split
	// by generation: the slots of sequence numbers [g·genSize, (g+1)·genSize)
	// are in gens[g % len(gens)] (the newest generation is cur), enough
	// generations for the last size stamps and the one being filled. The
	// oldest is emptied whole (clear) to make room for the next: a Go map
	// whose entries are deleted one by one fills with tombstones, and
	// every insert then probes long (see docs/design.md).
	gens    []stampGen
	genSize uint64
	cur     uint64 // the newest generation indexed
}

// stampGen is one generation of the index: gen is the generation its map
// holds, valid only when m is not empty.
type stampGen struct {
	gen uint64
	m   map[uint64]uint64
}

// stampGenerations is the number of generations the index divides the ring
// into: the index holds at most (1 + 1/stampGenerations) × Size() entries,
// and a lookup that hits in the newest generation (a line read soon after
// its connection was accepted) touches only a map of Size()/stampGenerations
// entries.
const stampGenerations = 8

// headMap is what TupleStamps reads the ring's head from: the
// ipng_tuple_head map (*ebpf.Map), or the fuzz test's ring in memory
// (FuzzTupleStamps).
type headMap interface {
	Lookup(key, valueOut any) error
}

// stampSlotSize is the stride of the ring's slots in the mapping (the
// kernel rounds array values up to 8 bytes).
const stampSlotSize = (unsafe.Sizeof(ipngbpf.SockopsIpngStampSlot{}) + 7) &^ 7

// NewTupleStamps maps the ring of stamps into memory, read-only; the
// kernel maps a BPF array shared only through a writable descriptor
// (Program.Maps, or OpenPinned as root). Close it after use.
func (m *Maps) NewTupleStamps() (*TupleStamps, error) {
	if m.TupleStamps == nil || m.TupleHead == nil {
		return nil, errNoTuples
	}
	if uintptr(m.TupleStamps.ValueSize()) != unsafe.Sizeof(ipngbpf.SockopsIpngStampSlot{}) {
		return nil, fmt.Errorf("%s has %d-byte values, this version reads %d", PinTupleStamps,
			m.TupleStamps.ValueSize(), unsafe.Sizeof(ipngbpf.SockopsIpngStampSlot{}))
	}
	size := uint64(m.TupleStamps.MaxEntries())
	if size&(size-1) != 0 {
		return nil, fmt.Errorf("%s has %d entries, not a power of two", PinTupleStamps, size)
	}
	page := uint64(os.Getpagesize())
	length := (size*uint64(stampSlotSize) + page - 1) &^ (page - 1)
	mem, err := unix.Mmap(m.TupleStamps.FD(), 0, int(length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", PinTupleStamps, err)
	}
	return newTupleStamps(m.TupleHead, mem, size), nil
}

// newTupleStamps reads the ring mem of size slots whose head is read from
// head.
func newTupleStamps(head headMap, mem []byte, size uint64) *TupleStamps {
	genSize := max(1, size/stampGenerations)
	r := &TupleStamps{head: head, mem: mem, size: size, genSize: genSize,
		gens: make([]stampGen, size/genSize+1)}
	for i := range r.gens {
		r.gens[i].m = map[uint64]uint64{}
	}
	return r
}

// add indexes sequence number seq under hash h. Sequence numbers come in
// increasing order.
func (r *TupleStamps) add(h, seq uint64) {
	g := seq / r.genSize
	n := uint64(len(r.gens))
	e := &r.gens[g%n]
	if e.gen != g || g > r.cur {
		if g > r.cur {
			// Generations skipped (the head jumped) hold nothing newer
			// than this one's: empty them too.
			for old := max(r.cur+1, g-min(g, n-1)); old < g; old++ {
				clear(r.gens[old%n].m)
			}
			r.cur = g
		}
		if e.gen != g {
			clear(e.m)
			e.gen = g
		}
	}
	e.m[h] = seq
}

// find returns the latest sequence number indexed under h.
func (r *TupleStamps) find(h uint64) (uint64, bool) {
	n := uint64(len(r.gens))
	for i := range n {
		if i > r.cur {
			break
		}
		g := r.cur - i
		e := &r.gens[g%n]
		if e.gen != g {
			continue
		}
		if seq, ok := e.m[h]; ok {
			return seq, true
		}
	}
	return 0, false
}

// indexLen is the number of entries of the index.
func (r *TupleStamps) indexLen() int {
	n := 0
	for i := range r.gens {
		n += len(r.gens[i].m)
	}
	return n
}

// Size is the number of stamps the ring holds.
func (r *TupleStamps) Size() uint64 { return r.size }

// slot is the ring slot of sequence number seq.
func (r *TupleStamps) slot(seq uint64) *ipngbpf.SockopsIpngStampSlot {
	return (*ipngbpf.SockopsIpngStampSlot)(unsafe.Pointer(&r.mem[(seq&(r.size-1))*uint64(stampSlotSize)]))
}

// Sync indexes the slots written since the last Sync: one system call (the
// ring's head) and a read of each new slot.
func (r *TupleStamps) Sync() error {
	if r.mem == nil {
		return errors.New("the 4-tuple stamps are closed")
	}
	var head uint64
	if err := r.head.Lookup(uint32(0), &head); err != nil {
		return fmt.Errorf("reading %s: %w", PinTupleHead, err)
	}
	r.last = head
	if head > r.size && r.next < head-r.size {
		r.next = head - r.size // older slots are overwritten
	}
	for ; r.next < head; r.next++ {
		s := r.slot(r.next)
		seq := atomic.LoadUint64(&s.Seq)
		if seq != r.next+1 {
			if seq < r.next+1 && r.next+inFlight >= head {
				break // reserved by a CPU that has not written it yet: next time
			}
			continue // overwritten since head was read, or never written (a replaced ring)
		}
		h := tupleHash(&s.Stamp.Tuple)
		if atomic.LoadUint64(&s.Seq) == seq { // not overwritten while hashed
			r.add(h, r.next)
		}
	}
	return nil
}

// Lookup finds the stamp of the connection (netnsCookie, local, remote)
// among the slots indexed by the last Sync (and, when that Sync stopped at
// a slot still being written, by another one). It makes no system call
// otherwise and does not allocate.
func (r *TupleStamps) Lookup(netnsCookie uint64, local, remote netip.AddrPort, s *Stamp) (bool, error) {
	if r.mem == nil {
		return false, errors.New("the 4-tuple stamps are closed")
	}
	key := tupleKey(netnsCookie, local, remote)
	h := tupleHash(&key)
	seq, ok := r.find(h)
	if !ok && r.next < r.last {
		if err := r.Sync(); err != nil {
			return false, err
		}
		seq, ok = r.find(h)
	}
	if !ok {
		return false, nil
	}
	slot := r.slot(seq)
	if atomic.LoadUint64(&slot.Seq) != seq+1 {
		return false, nil // overwritten by a later stamp
	}
	raw := slot.Stamp
	if atomic.LoadUint64(&slot.Seq) != seq+1 || raw.Tuple != key {
		return false, nil
	}
	decodeStamp(&raw, s)
	return true, nil
}

// Close unmaps the ring.
func (r *TupleStamps) Close() error {
	if r == nil || r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem, r.gens = nil, nil
	return err
}
