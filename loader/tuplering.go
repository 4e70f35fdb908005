package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"unsafe"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// TupleRingFactor: the ring of stamped 4-tuples (ipng_tuple_ring) holds the
// hashes of the last TupleRingFactor × tuple_map_entries stamps (rounded up to
// a power of two), so a 4-tuple evicted from the LRU map stays known as
// stamped for at least three map-fulls of stamps after its eviction.
const TupleRingFactor = 4

// inFlight: a slot this close to the head that is not written yet may be
// reserved by a CPU about to write it; an older unwritten slot never will be
// (the ring was replaced while the head was kept).
const inFlight = 1024

// tupleRingSize is the number of ring slots for a 4-tuple map of n entries.
func tupleRingSize(n uint32) uint32 {
	want := uint64(n) * TupleRingFactor
	if want <= 1 {
		return 1
	}
	return uint32(1) << bits.Len64(want-1)
}

// tupleHash is the program's tuple_hash of a stamp's 4-tuple key.
func tupleHash(k *ipngbpf.SockopsIpngTuple) uint64 {
	b := unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k))
	h := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(b); i += 8 {
		h ^= binary.LittleEndian.Uint64(b[i:])
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 31
	}
	return h
}

// TupleHistory answers, for a 4-tuple missing from the ring of stamps
// (TupleStamps), whether
// the program stamped it among its last Window() stamps: it reads the ring
// of stamped 4-tuples (only the slots written since its last call) into an
// index of hashes. A 4-tuple is identified by its 64-bit hash: two 4-tuples
// of one window share a hash with a probability below 2^-40. Not safe for
// concurrent use.
type TupleHistory struct {
	ring, head arrayMap
	size       uint64
	next       uint64            // the first sequence number not yet indexed
	index      map[uint64]uint64 // hash → latest sequence number
	slot       ipngbpf.SockopsIpngRingSlot
}

// arrayMap is what TupleHistory reads the ring and its head from: the
// BPF arrays (*ebpf.Map), or the fuzz test's arrays in memory
// (FuzzTupleHistory).
type arrayMap interface {
	Lookup(key, valueOut any) error
}

// TupleHistory returns the history of the 4-tuple map, or an error when the
// maps have no ring (the 4-tuple map is off, or pins of an older version).
func (m *Maps) TupleHistory() (*TupleHistory, error) {
	if m.TupleRing == nil || m.TupleHead == nil {
		return nil, errors.New("the 4-tuple ring is not available (nginx ingest disabled, or pins of an older version)")
	}
	return &TupleHistory{ring: m.TupleRing, head: m.TupleHead, size: uint64(m.TupleRing.MaxEntries()),
		index: map[uint64]uint64{}}, nil
}

// Window is the number of stamps the ring remembers.
func (h *TupleHistory) Window() uint64 { return h.size }

// Stamped reports whether key was written to the 4-tuple map among the last
// Window() stamps.
func (h *TupleHistory) Stamped(netnsCookie uint64, local, remote netip.AddrPort) (bool, error) {
	key := tupleKey(netnsCookie, local, remote)
	head, err := h.sync()
	if err != nil {
		return false, err
	}
	seq, ok := h.index[tupleHash(&key)]
	return ok && seq+h.size >= head, nil
}

// sync indexes the ring slots written since the last call and returns the
// ring's head (the next sequence number).
func (h *TupleHistory) sync() (uint64, error) {
	var head uint64
	if err := h.head.Lookup(uint32(0), &head); err != nil {
		return 0, fmt.Errorf("reading %s: %w", ipngbpf.SockopsMapIpngTupleHead, err)
	}
	if head > h.size && h.next < head-h.size {
		h.next = head - h.size // older slots are overwritten
	}
	for ; h.next < head; h.next++ {
		idx := uint32(h.next & (h.size - 1))
		if err := h.ring.Lookup(unsafe.Pointer(&idx), unsafe.Pointer(&h.slot)); err != nil {
			return 0, fmt.Errorf("reading %s: %w", ipngbpf.SockopsMapIpngTupleRing, err)
		}
		if h.slot.Seq < h.next+1 && h.next+inFlight >= head {
			break // reserved by a CPU that has not written it yet: next time
		}
		if h.slot.Seq == h.next+1 {
			h.index[h.slot.Hash] = h.next
		} // else overwritten since head was read: a later call indexes it
	}
	// The window holds at most size hashes: sweeping when a quarter more
	// have piled up bounds the index at 1.25 × size, for O(1) per slot.
	if uint64(len(h.index)) > h.size+h.size/4 {
		for k, seq := range h.index {
			if seq+h.size < head {
				delete(h.index, k)
			}
		}
	}
	return head, nil
}
