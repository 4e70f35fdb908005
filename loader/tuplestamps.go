package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
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
	head *ebpf.Map
	mem  []byte
	size uint64
	next uint64 // the first sequence number not yet indexed
	last uint64 // the head read by the last Sync
	// index: hash of the 4-tuple → sequence number, open addressing
	// (linear probing, at most maxProbe entries from hash & mask) over
	// 2 × size entries, each a tag (the hash's upper half) and the low
	// half of the sequence number (entryOf). An entry whose stamp the ring
	// has overwritten is stale and taken by the next insert that probes
	// it, so the index needs no deletes and no sweeps, and never grows.
	// A stamp whose maxProbe entries all hold live stamps goes to
	// overflow (a map swept like the index used to be), so every stamp
	// in the ring stays indexed.
	index    []uint64
	mask     uint64
	overflow map[uint64]uint64 // hash → sequence number
}

// maxProbe bounds the entries an insert or a lookup looks at. The index
// holds at most size live stamps in 2 × size entries (load ≤ 0.5), where
// runs this long are rare; they go to the overflow map.
const maxProbe = 32

// entryOf packs the tag of hash h (never 0, so an entry is never 0) and
// the low 32 bits of seq.
func entryOf(h, seq uint64) uint64 { return (h>>32|1)<<32 | seq&0xffffffff }

// seqOf is the sequence number of entry e: the one below next with e's
// low 32 bits (exact for stamps less than 2^32 stamps older than next;
// older ones are stale either way, and a lookup checks the slot's
// sequence number).
func (r *TupleStamps) seqOf(e uint64) uint64 {
	return r.next - uint64(uint32(r.next)-uint32(e))
}

// stale reports whether the stamp of entry e has been overwritten in the
// ring (or e is empty).
func (r *TupleStamps) stale(e uint64) bool {
	if e == 0 {
		return true
	}
	d := uint64(uint32(r.next) - uint32(e))
	return d == 0 || d > r.size
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

func newTupleStamps(head *ebpf.Map, mem []byte, size uint64) *TupleStamps {
	return &TupleStamps{head: head, mem: mem, size: size, index: make([]uint64, 2*size), mask: 2*size - 1,
		overflow: map[uint64]uint64{}}
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
	r.syncTo(head)
	return nil
}

// syncTo indexes the slots written before head.
func (r *TupleStamps) syncTo(head uint64) {
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
			r.insert(h, r.next)
		}
	}
	// The ring holds at most size stamps: sweeping when a quarter more
	// have piled up bounds the overflow map at 1.25 × size, for O(1) per
	// stamp (and it is nearly always empty).
	if uint64(len(r.overflow)) > r.size/4 {
		for k, seq := range r.overflow {
			if seq+r.size < head {
				delete(r.overflow, k)
			}
		}
	}
}

// insert indexes the stamp of sequence number seq (the highest so far),
// whose 4-tuple hashes to h. It takes the first entry that is stale or has
// h's tag (an older stamp of the same 4-tuple, or another 4-tuple with the
// same tag, which a lookup then finds through the overflow map or misses:
// see Lookup), so that a lookup, which takes the first entry that matches,
// finds the latest stamp of a 4-tuple.
func (r *TupleStamps) insert(h, seq uint64) {
	e := entryOf(h, seq)
	tag := e >> 32
	p := h & r.mask
	for range maxProbe {
		old := r.index[p]
		if old>>32 == tag || r.stale(old) {
			if old != 0 && old>>32 == tag {
				// It may be another 4-tuple's (same tag): keep that
				// one where a lookup finds it.
				if o := r.seqOf(old); !r.stale(old) && r.slotHash(o) != h {
					r.overflow[r.slotHash(o)] = o
				}
			}
			r.index[p] = e
			return
		}
		p = (p + 1) & r.mask
	}
	r.overflow[h] = seq
}

// slotHash is the hash of the 4-tuple in the slot of seq (0 if the slot
// holds another stamp by now).
func (r *TupleStamps) slotHash(seq uint64) uint64 {
	s := r.slot(seq)
	if atomic.LoadUint64(&s.Seq) != seq+1 {
		return 0
	}
	h := tupleHash(&s.Stamp.Tuple)
	if atomic.LoadUint64(&s.Seq) != seq+1 {
		return 0
	}
	return h
}

// find returns the sequence number of the latest indexed stamp whose
// 4-tuple hashes to h.
func (r *TupleStamps) find(h uint64) (uint64, bool) {
	tag := entryOf(h, 0) >> 32
	p := h & r.mask
	for range maxProbe {
		e := r.index[p]
		if e == 0 {
			break
		}
		if e>>32 == tag && !r.stale(e) {
			seq := r.seqOf(e)
			if r.slotHash(seq) == h {
				return seq, true
			}
		}
		p = (p + 1) & r.mask
	}
	if len(r.overflow) > 0 {
		seq, ok := r.overflow[h]
		return seq, ok
	}
	return 0, false
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
	r.mem, r.index, r.overflow = nil, nil, nil
	return err
}
