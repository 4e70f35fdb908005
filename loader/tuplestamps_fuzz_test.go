package loader

import (
	"errors"
	"net/netip"
	"testing"
	"unsafe"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// ringHead is the ring's head for a TupleStamps reading a ring in memory:
// what ipng_tuple_head holds, or an error for the next read when fail is
// set.
type ringHead struct {
	head uint64
	fail bool
}

var errHeadRead = errors.New("injected head read failure")

func (h *ringHead) Lookup(key, valueOut any) error {
	if h.fail {
		h.fail = false
		return errHeadRead
	}
	*valueOut.(*uint64) = h.head
	return nil
}

// fuzzConn is one of the few connections the fuzz target stamps: few, so
// that the same 4-tuple is stamped again, overwritten and looked up often.
// Two differ only in their network namespace, two only in the remote port,
// and one is IPv6.
type fuzzConn struct {
	netns         uint64
	local, remote netip.AddrPort
	family        uint8
}

var fuzzConns = []fuzzConn{
	{1, netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("192.0.2.7:40000"), 4},
	{2, netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("192.0.2.7:40000"), 4},
	{1, netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("192.0.2.7:40001"), 4},
	{1, netip.MustParseAddrPort("[2001:db8::1]:443"), netip.MustParseAddrPort("[2001:db8::2]:50000"), 6},
}

// The operations of FuzzTupleStamps, one byte each (op % opCount), some
// followed by argument bytes.
const (
	opWrite     = iota // conn: the program stamps the next sequence number (seq = 0, stamp, seq = n + 1)
	opReserve          // a CPU takes the next sequence number and has not written its slot yet
	opComplete         // conn: the oldest reserved slot is written (late; possibly lapped)
	opTear             // conn, n: the next sequence number, its slot left at seq 0 with n bytes of the stamp copied
	opCorrupt          // off, 8 bytes: arbitrary bytes written into the ring (a replaced ring, a bad writer)
	opSetSeq           // slot, delta: a slot's seq set to head + delta − 128 (a future, stale or zero claim)
	opJump             // hi, lo: the head advances by hi<<8|lo without writes (sequence numbers never written)
	opSync             // the reader indexes the slots up to the head
	opLookup           // conn
	opHeadFails        // the next read of the head fails
	opCount
)

// FuzzTupleStamps decodes arbitrary ring contents the way the nginx ingest
// does (TupleStamps.Sync and Lookup over the memory-mapped
// ipng_tuple_stamps), driven by a program of operations: stamps written as
// the sock_ops program writes them, slots reserved and written late (also
// after the ring lapped them), writes torn in the middle, arbitrary bytes and
// sequence numbers in the slots, the head jumping ahead, its read failing.
// It checks, without BPF:
//   - nothing panics or reads outside the ring;
//   - a stamp found is for the connection looked up (network namespace and
//     both addresses) and is, byte for byte, a slot the ring holds at that
//     moment with a sequence number that its position and the head allow:
//     never another connection's stamp, a torn slot (seq 0), a slot
//     claiming a sequence number the head has not reached, or a slot with
//     a sequence number of another position;
//   - on a ring only ever written as the program writes it (no arbitrary
//     bytes, no lapped late write), once the reader has indexed every slot
//     up to the head, a lookup finds exactly the latest stamp of that
//     connection still in the ring, and misses when there is none
//     (stamped more than Size() stamps ago, never stamped, or torn);
//   - the index stays within Size() entries and one generation
//     (Size()/stampGenerations, at least 1) after each Sync;
//   - a failed head read is an error, never a stamp.
func FuzzTupleStamps(f *testing.F) {
	// Eight stamps, every connection looked up, in a ring of 4 (lapped).
	f.Add(uint8(2), uint64(0), []byte{},
		[]byte{opWrite, 0, opWrite, 1, opWrite, 2, opWrite, 3, opWrite, 0, opSync,
			opLookup, 0, opLookup, 1, opLookup, 2, opLookup, 3,
			opWrite, 1, opWrite, 1, opWrite, 2, opWrite, 3, opSync,
			opLookup, 0, opLookup, 1, opLookup, 2, opLookup, 3})
	// A slot reserved and written after later ones: the reader stops at it,
	// a lookup syncs again, then finds the late one.
	f.Add(uint8(3), uint64(0), []byte{},
		[]byte{opWrite, 0, opReserve, opWrite, 1, opSync, opLookup, 1, opComplete, 2, opLookup, 2, opLookup, 1})
	// A torn write, and a head that starts far from zero (a pinned ring
	// taken over by a restarted agent).
	f.Add(uint8(2), uint64(1)<<40, []byte{},
		[]byte{opWrite, 0, opTear, 0, 50, opSync, opLookup, 0, opWrite, 0, opSync, opLookup, 0})
	// Garbage slots, future sequence numbers, a head jump past the
	// in-flight window, a failed head read.
	f.Add(uint8(1), uint64(3), []byte("\x01\x00\x00\x00\x00\x00\x00\x00 garbage"),
		[]byte{opSetSeq, 0, 200, opSync, opLookup, 0, opJump, 8, 0, opWrite, 3, opHeadFails, opLookup, 3,
			opCorrupt, 96, 4, 0, 0, 0, 0, 0, 0, 0, opSync, opLookup, 3})
	// A reader that stops at a reserved slot, then a lookup whose re-sync
	// fails.
	f.Add(uint8(4), uint64(0), []byte{},
		[]byte{opReserve, opWrite, 0, opSync, opHeadFails, opLookup, 0, opComplete, 1, opLookup, 0, opLookup, 1})

	f.Fuzz(func(t *testing.T, sizeLog uint8, start uint64, initial, prog []byte) {
		if len(prog) > 4096 {
			return // long programs only repeat what short ones do, slower
		}
		size := uint64(1) << (sizeLog % 8) // 1 … 128 slots
		mem := make([]byte, size*uint64(stampSlotSize))
		copy(mem, initial)
		// A head starts at 0 and counts stamps: 2^62 of them is more
		// than a lifetime of connections, and at most 4096 jumps of 2^16
		// stay far from overflowing it.
		head := &ringHead{head: start & (1<<62 - 1)}
		r := newTupleStamps(head, mem, size)
		m := ringModel{t: t, r: r, head: head, mem: mem, size: size, written: map[uint64]ipngbpf.SockopsIpngStamp{}}
		for _, b := range initial {
			if b != 0 {
				m.dirty = true // the ring held something before the first stamp
				break
			}
		}
		p := program(prog)
		for !p.done() {
			switch p.next() % opCount {
			case opWrite:
				m.write(m.reserve(), int(p.next()))
			case opReserve:
				m.pending = append(m.pending, m.reserve())
			case opComplete:
				if len(m.pending) == 0 {
					continue
				}
				seq := m.pending[0]
				m.pending = m.pending[1:]
				if seq+size < head.head {
					m.dirty = true // lapped: overwrites a newer stamp, not a state the program reaches in practice
				}
				m.write(seq, int(p.next()))
			case opTear:
				m.tear(m.reserve(), int(p.next()), int(p.next()))
			case opCorrupt:
				off := int(p.next()) * 8 % len(mem)
				for i := 0; i < 8 && off+i < len(mem); i++ {
					mem[off+i] = p.next()
				}
				m.dirty = true
			case opSetSeq:
				s := m.slotAt(uint64(p.next()))
				s.Seq = head.head + uint64(p.next()) - 128
				m.dirty = true
			case opJump:
				head.head += uint64(p.next())<<8 | uint64(p.next())
			case opSync:
				if err := r.Sync(); err != nil && !errors.Is(err, errHeadRead) {
					t.Fatalf("Sync: %v", err)
				}
				m.checkIndex()
			case opLookup:
				m.lookup(int(p.next()))
			case opHeadFails:
				head.fail = true
			}
		}
	})
}

// program is the fuzz target's operations; reading past its end gives 0.
type program []byte

func (p *program) done() bool { return len(*p) == 0 }

func (p *program) next() byte {
	if len(*p) == 0 {
		return 0
	}
	b := (*p)[0]
	*p = (*p)[1:]
	return b
}

// ringModel writes the ring as the sock_ops program does and knows what
// it wrote.
type ringModel struct {
	t       *testing.T
	r       *TupleStamps
	head    *ringHead
	mem     []byte
	size    uint64
	pending []uint64                            // reserved, not yet written
	written map[uint64]ipngbpf.SockopsIpngStamp // by sequence number: every stamp completely written
	dirty   bool                                // the ring holds bytes the program would not write
}

// slotAt is slot i (mod size) of the ring, laid out as the kernel maps it.
func (m *ringModel) slotAt(i uint64) *ipngbpf.SockopsIpngStampSlot {
	return (*ipngbpf.SockopsIpngStampSlot)(unsafe.Pointer(&m.mem[i%m.size*uint64(stampSlotSize)]))
}

// reserve takes the next sequence number (the program's fetch-and-add).
func (m *ringModel) reserve() uint64 {
	seq := m.head.head
	m.head.head++
	return seq
}

// stamp is the stamp the program writes for conn c at sequence number seq:
// its cookie and time make each stamp tell which write it was.
func stampFor(c fuzzConn, seq uint64) ipngbpf.SockopsIpngStamp {
	st := ipngbpf.SockopsIpngStamp{
		Tuple:     tupleKey(c.netns, c.local, c.remote),
		Cookie:    seq + 1,
		StampedNs: seq * 1000,
		Ifindex:   uint32(seq%7) + 1,
		Source:    ipngbpf.SockopsIpngSourceIPNG_SOURCE_SKB,
		Family:    c.family,
		Bound:     uint8(seq % 2),
		TagId:     uint32(seq % 5),
	}
	for i, ch := range "eth0" {
		st.Device[i] = int8(ch)
	}
	return st
}

func (m *ringModel) write(seq uint64, conn int) {
	st := stampFor(fuzzConns[conn%len(fuzzConns)], seq)
	s := m.slotAt(seq)
	s.Seq = 0
	s.Stamp = st
	s.Seq = seq + 1
	m.written[seq] = st
}

// tear leaves the slot of seq as a program interrupted in its copy would:
// seq 0 and n bytes of the new stamp over the old one.
func (m *ringModel) tear(seq uint64, conn, n int) {
	st := stampFor(fuzzConns[conn%len(fuzzConns)], seq)
	s := m.slotAt(seq)
	s.Seq = 0
	src := unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st))
	dst := unsafe.Slice((*byte)(unsafe.Pointer(&s.Stamp)), unsafe.Sizeof(st))
	copy(dst[:n%len(dst)], src)
}

// checkIndex: the index is bounded, whatever the ring held.
func (m *ringModel) checkIndex() {
	if limit := m.size + max(1, m.size/stampGenerations); uint64(m.r.indexLen()) > limit {
		m.t.Fatalf("index holds %d entries, more than the ring's %d slots and a generation", m.r.indexLen(), m.size)
	}
}

// lookup looks connection conn up and checks what it found against the
// ring's memory and, on a ring written only as the program writes it,
// against the latest stamp of that connection.
func (m *ringModel) lookup(conn int) {
	t := m.t
	c := fuzzConns[conn%len(fuzzConns)]
	var got Stamp
	found, err := m.r.Lookup(c.netns, c.local, c.remote, &got)
	if err != nil {
		if !errors.Is(err, errHeadRead) {
			t.Fatalf("Lookup: %v", err)
		}
		if found {
			t.Fatalf("Lookup failed (%v) and found a stamp", err)
		}
		return
	}
	key := tupleKey(c.netns, c.local, c.remote)
	h := m.head.head
	lo := uint64(0)
	if h > m.size {
		lo = h - m.size
	}
	// Every slot that holds a whole stamp of this connection at a sequence
	// number the head and the slot's position allow, and the latest one.
	var latest *ipngbpf.SockopsIpngStampSlot
	match := false
	for i := range m.size {
		s := m.slotAt(i)
		if s.Seq == 0 || s.Seq-1 >= h || (s.Seq-1)%m.size != i || s.Stamp.Tuple != key {
			continue
		}
		var want Stamp
		decodeStamp(&s.Stamp, &want)
		if found && want == got {
			match = true
		}
		if s.Seq-1 >= lo && (latest == nil || s.Seq > latest.Seq) {
			latest = s
		}
	}
	if found {
		if got.NetnsCookie != c.netns || got.Local != c.local || got.Remote != c.remote {
			t.Fatalf("Lookup(%d %s %s) found the stamp of %d %s %s", c.netns, c.local, c.remote,
				got.NetnsCookie, got.Local, got.Remote)
		}
		if !match {
			t.Fatalf("Lookup(%d %s %s) found %+v, which no slot of the ring holds (head %d, size %d)",
				c.netns, c.local, c.remote, got, h, m.size)
		}
	}
	// Exact answers: a ring written only as the program writes it, every
	// slot up to the head indexed.
	if m.dirty || m.r.next != h || m.r.last != h {
		return
	}
	if latest == nil {
		if found {
			t.Fatalf("Lookup(%d %s %s) found %+v; the ring holds no stamp of it (head %d, size %d)",
				c.netns, c.local, c.remote, got, h, m.size)
		}
		return
	}
	st, ok := m.written[latest.Seq-1]
	if !ok || st != latest.Stamp {
		t.Fatalf("slot of sequence number %d holds a stamp that was not written there", latest.Seq-1)
	}
	var want Stamp
	decodeStamp(&st, &want)
	if !found || got != want {
		t.Fatalf("Lookup(%d %s %s) = %v %+v; want the stamp of sequence number %d: %+v (head %d, size %d)",
			c.netns, c.local, c.remote, found, got, latest.Seq-1, want, h, m.size)
	}
}
