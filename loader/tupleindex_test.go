package loader

import (
	"net/netip"
	"testing"
	"unsafe"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// memRing is a ring of stamps in memory, written as the program writes
// ipng_tuple_stamps, for tests of the index without BPF.
type memRing struct {
	r    *TupleStamps
	head uint64
}

func newMemRing(size uint64) *memRing {
	mem := make([]byte, size*uint64(stampSlotSize))
	return &memRing{r: newTupleStamps(nil, mem, size)}
}

// stamp writes the stamp of the 4-tuple (netns 1, 192.0.2.1:80, client)
// at the next sequence number and returns it.
func (m *memRing) stamp(client netip.AddrPort) uint64 {
	seq := m.head
	m.head++
	s := m.r.slot(seq)
	s.Seq = 0
	s.Stamp = ipngbpf.SockopsIpngStamp{Tuple: tupleKey(1, netip.MustParseAddrPort("192.0.2.1:80"), client),
		Ifindex: uint32(seq%1000) + 1}
	s.Seq = seq + 1
	return seq
}

func (m *memRing) lookup(client netip.AddrPort) (Stamp, bool) {
	var st Stamp
	key := tupleKey(1, netip.MustParseAddrPort("192.0.2.1:80"), client)
	seq, ok := m.r.find(tupleHash(&key))
	if !ok {
		return st, false
	}
	slot := m.r.slot(seq)
	if slot.Seq != seq+1 || slot.Stamp.Tuple != key {
		return st, false
	}
	raw := slot.Stamp
	decodeStamp(&raw, &st)
	return st, true
}

func client(i uint64) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 24), byte(i >> 16), byte(i >> 8)}), uint16(i))
}

// TestTupleIndex: every stamp still in the ring is found, the latest one of
// a 4-tuple stamped twice, and overwritten ones are not, whatever the
// probe runs (a tiny index forces the overflow map).
func TestTupleIndex(t *testing.T) {
	for _, size := range []uint64{1, 4, 64, 1024} {
		m := newMemRing(size)
		want := map[netip.AddrPort]uint64{} // client → latest seq
		for round := uint64(0); round < 6*size+10; round++ {
			// New clients, and every 7th stamp a client stamped before
			// (port reuse), including some already overwritten.
			c := client(round)
			if round%7 == 6 {
				c = client(round / 2)
			}
			want[c] = m.stamp(c)
			if round%3 == 0 || round%(size+1) == 0 {
				m.r.syncTo(m.head)
				for c, seq := range want {
					st, ok := m.lookup(c)
					inRing := seq+size >= m.head
					switch {
					case inRing && !ok:
						t.Fatalf("size %d, head %d: stamp %d of %v not found", size, m.head, seq, c)
					case inRing && st.Ifindex != uint32(seq%1000)+1:
						t.Fatalf("size %d, head %d: %v found with ifindex %d, want the latest stamp's (seq %d)", size, m.head, c, st.Ifindex, seq)
					case !inRing && ok:
						t.Fatalf("size %d, head %d: overwritten stamp %d of %v found", size, m.head, seq, c)
					}
				}
			}
		}
		if n := uint64(len(m.r.overflow)); n > size+size/4 {
			t.Errorf("size %d: overflow map holds %d entries", size, n)
		}
	}
}

// TestTupleIndexTagCollision: two 4-tuples whose hashes share the tag and
// the first probe position are both found.
func TestTupleIndexTagCollision(t *testing.T) {
	m := newMemRing(1024)
	a := m.stamp(client(1))
	m.r.syncTo(m.head)
	// Forge an entry for another seq with a's tag at a's position.
	ka := tupleKey(1, netip.MustParseAddrPort("192.0.2.1:80"), client(1))
	ha := tupleHash(&ka)
	b := m.stamp(client(2))
	m.r.next = m.head
	m.r.insert(ha^1<<20, b) // a hash with a's tag and first position; slot b holds client 2
	if seq, ok := m.r.find(ha); !ok || seq != a {
		// b's entry took a's place; a must still be found (overflow).
		t.Fatalf("a (seq %d) after a colliding insert: find = %d, %v", a, seq, ok)
	}
}

// refIndex is the index TupleStamps used before (a Go map swept when it
// holds 1.25 × size), for BenchmarkTupleIndex.
type refIndex struct {
	m    map[uint64]uint64
	size uint64
}

func (x *refIndex) insert(h, seq, head uint64) {
	x.m[h] = seq
	if uint64(len(x.m)) > x.size+x.size/4 {
		for k, s := range x.m {
			if s+x.size < head {
				delete(x.m, k)
			}
		}
	}
}

// BenchmarkTupleIndex: index one stamp and look one up (the line of a
// connection stamped 64 stamps earlier), in steady state with a ring of
// the default size.
func BenchmarkTupleIndex(b *testing.B) {
	const size = 262144
	hashes := make([]uint64, 4*size)
	for i := range hashes {
		k := tupleKey(1, netip.MustParseAddrPort("192.0.2.1:80"), client(uint64(i)))
		hashes[i] = tupleHash(&k)
	}
	b.Run("open-addressing", func(b *testing.B) {
		m := newMemRing(size)
		for i := range 2 * size {
			m.stamp(client(uint64(i)))
		}
		m.r.syncTo(m.head)
		b.ResetTimer()
		for b.Loop() {
			seq := m.stamp(client(m.head % uint64(len(hashes))))
			m.r.syncTo(m.head)
			if _, ok := m.r.find(hashes[(seq-64)%uint64(len(hashes))]); !ok {
				b.Fatal("not found")
			}
		}
	})
	b.Run("go-map", func(b *testing.B) {
		x := &refIndex{m: map[uint64]uint64{}, size: size}
		var seq uint64
		for ; seq < 2*size; seq++ {
			x.insert(hashes[seq%uint64(len(hashes))], seq, seq+1)
		}
		mem := make([]byte, size*uint64(stampSlotSize))
		b.ResetTimer()
		for b.Loop() {
			// The same slot write and tuple hash as the other arm.
			s := (*ipngbpf.SockopsIpngStampSlot)(unsafe.Pointer(&mem[(seq&(size-1))*uint64(stampSlotSize)]))
			s.Stamp.Tuple = tupleKey(1, netip.MustParseAddrPort("192.0.2.1:80"), client(seq%uint64(len(hashes))))
			s.Seq = seq + 1
			x.insert(tupleHash(&s.Stamp.Tuple), seq, seq+1)
			if _, ok := x.m[hashes[(seq-64)%uint64(len(hashes))]]; !ok {
				b.Fatal("not found")
			}
			seq++
		}
	})
}
