package loader

import (
	"errors"
	"math/bits"
	"net/netip"
	"testing"
	"unsafe"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// histArrays are ipng_tuple_ring and ipng_tuple_head in memory, for a
// TupleHistory without BPF. A read fails once when its fail flag is set.
type histArrays struct {
	t                   *testing.T
	slots               []ipngbpf.SockopsIpngRingSlot
	head                uint64
	headFails, ringFail bool
}

var errRingRead = errors.New("injected ring read failure")

type histHead struct{ a *histArrays }

func (h histHead) Lookup(key, valueOut any) error {
	if h.a.headFails {
		h.a.headFails = false
		return errHeadRead
	}
	*valueOut.(*uint64) = h.a.head
	return nil
}

type histRing struct{ a *histArrays }

// Lookup copies slot key out, as the kernel does; a key past the array's
// end fails the test (the kernel would refuse it, and the reader must
// never ask).
func (r histRing) Lookup(key, valueOut any) error {
	a := r.a
	if a.ringFail {
		a.ringFail = false
		return errRingRead
	}
	var idx uint32
	switch k := key.(type) {
	case unsafe.Pointer:
		idx = *(*uint32)(k)
	case *uint32:
		idx = *k
	case uint32:
		idx = k
	default:
		a.t.Fatalf("ring lookup with a key of type %T", key)
	}
	if uint64(idx) >= uint64(len(a.slots)) {
		a.t.Fatalf("ring lookup of slot %d; the ring has %d", idx, len(a.slots))
	}
	switch v := valueOut.(type) {
	case unsafe.Pointer:
		*(*ipngbpf.SockopsIpngRingSlot)(v) = a.slots[idx]
	case *ipngbpf.SockopsIpngRingSlot:
		*v = a.slots[idx]
	default:
		a.t.Fatalf("ring lookup into a value of type %T", valueOut)
	}
	return nil
}

// histConns: the connections of FuzzTupleStamps, and one more that no
// operation ever stamps (looked up, never written).
var histConns = append(append([]fuzzConn{}, fuzzConns...),
	fuzzConn{3, netip.MustParseAddrPort("10.0.0.9:80"), netip.MustParseAddrPort("198.51.100.1:1234"), 4})

// The operations of FuzzTupleHistory, one byte each (op % histOpCount),
// some followed by argument bytes.
const (
	histWrite     = iota // conn: the program stamps the next sequence number (hash, then seq = n + 1)
	histReserve          // a CPU takes the next sequence number and has not written its slot yet
	histComplete         // conn: the oldest reserved slot is written (late, possibly after the ring lapped it)
	histJump             // hi, lo: the head advances by hi<<8|lo without writes (a ring replaced, the head kept)
	histStamped          // conn: Stamped, checked against the model
	histHeadFails        // the next read of the head fails
	histRingFails        // the next read of a ring slot fails
	histCorrupt          // slot, 8 bytes: a slot's hash (even slot byte) or seq (odd) set to arbitrary bytes
	histOpCount
)

// FuzzTupleHistory drives TupleHistory (the ring of 4-tuple hashes that
// tells a 4-tuple evicted from the ring of stamps from one never seen) with
// a program of operations over the ring in memory, and checks it against a
// model of what the program wrote, without BPF:
//   - nothing panics, no slot outside the ring is read, Window() is the
//     ring's size;
//   - a failed read of the head or of a slot is an error and false, never
//     a stamp;
//   - on a ring only ever written as the program writes it (arbitrary
//     bytes make it "dirty": then only the other checks hold), Stamped is
//     true exactly when the connection was stamped among the last Window()
//     sequence numbers (the documented capacity rule), where "exactly"
//     allows for what the reader cannot see yet: it stops at a slot
//     reserved and not yet written within the in-flight distance of the
//     head (inFlight, also the slots a head jump left unwritten), so
//     stamps at or after that slot are not required to be found, and a
//     stamp is not required to be found when its slot was written later
//     than the reader may skip it (more than inFlight stamps late) or
//     overwritten by a write that came after the ring lapped it. It is
//     never true for a connection with no stamp in the window: a 4-tuple
//     never stamped, or stamped only longer ago, is never reported as
//     stamped;
//   - the index holds at most 1.25 × Window() hashes after each Stamped.
//
// It also checks the ring's sizing rule (tupleRingSize) on the fuzzed head:
// a power of two, at least TupleRingFactor × the map's entries, less than
// twice that.
func FuzzTupleHistory(f *testing.F) {
	// A ring of 4, ten stamps: the last four found, the older ones and
	// the never-stamped connection not.
	f.Add(uint8(2), uint64(0), []byte{},
		[]byte{histWrite, 0, histWrite, 1, histWrite, 2, histWrite, 3, histStamped, 0, histStamped, 4,
			histWrite, 0, histWrite, 0, histWrite, 0, histWrite, 0, histStamped, 0, histStamped, 1,
			histWrite, 1, histWrite, 2, histStamped, 1, histStamped, 2, histStamped, 3, histStamped, 4})
	// A pinned ring taken over by a restarted agent (head far from 0, the
	// previous stamps still there), then stamped on.
	f.Add(uint8(3), uint64(1)<<40, []byte{0, 1, 2, 3, 0, 1, 2, 3},
		[]byte{histStamped, 0, histStamped, 3, histStamped, 4, histWrite, 2, histWrite, 2, histWrite, 2,
			histWrite, 2, histWrite, 2, histWrite, 2, histWrite, 2, histWrite, 2, histStamped, 0, histStamped, 2})
	// A reserved slot: the reader stops there until it is written.
	f.Add(uint8(4), uint64(0), []byte{},
		[]byte{histWrite, 0, histReserve, histWrite, 1, histStamped, 1, histStamped, 0, histComplete, 2,
			histStamped, 1, histStamped, 2})
	// A head jump within the in-flight distance on a large ring (the
	// reader waits at the unwritten slots), then past it (it skips them).
	f.Add(uint8(13), uint64(5), []byte{1},
		[]byte{histJump, 0, 100, histWrite, 0, histStamped, 0, histStamped, 1, histJump, 8, 0, histWrite, 2,
			histStamped, 2, histStamped, 0, histStamped, 1})
	// Failed reads, a slot written after the ring lapped it, arbitrary
	// bytes.
	f.Add(uint8(1), uint64(3), []byte{},
		[]byte{histReserve, histWrite, 0, histWrite, 1, histWrite, 2, histHeadFails, histStamped, 2,
			histRingFails, histStamped, 2, histComplete, 3, histStamped, 2, histStamped, 3,
			histCorrupt, 1, 0, 0, 0, 0, 0, 0, 0, 0, histStamped, 3})

	f.Fuzz(func(t *testing.T, sizeLog uint8, start uint64, prefill, prog []byte) {
		if len(prog) > 4096 {
			return // long programs only repeat what short ones do, slower
		}
		checkRingSize(t, uint32(start))
		size := uint64(1) << (sizeLog % 14) // 1 … 8192 slots: smaller and larger than inFlight
		// 2^62 stamps is more than a lifetime of connections, and at
		// most 4096 jumps of 2^16 stay far from overflowing it.
		start &= 1<<62 - 1
		a := &histArrays{t: t, slots: make([]ipngbpf.SockopsIpngRingSlot, size), head: start}
		h := &TupleHistory{ring: histRing{a}, head: histHead{a}, size: size, index: map[uint64]uint64{}}
		if h.Window() != size {
			t.Fatalf("Window() = %d, want the ring's %d slots", h.Window(), size)
		}
		m := &histModel{t: t, h: h, a: a, size: size, byConn: make([][]uint64, len(histConns)),
			unsure: map[uint64]bool{}, owner: make([]uint64, size)}
		// What a previous agent left: the last n stamps before start.
		n := min(uint64(len(prefill)), size, start)
		if start > n {
			m.holes = append(m.holes, [2]uint64{0, start - n})
		}
		for i := range n {
			m.write(start-n+i, int(prefill[i]))
		}
		p := program(prog)
		for !p.done() {
			switch p.next() % histOpCount {
			case histWrite:
				m.write(m.reserve(), int(p.next()))
			case histReserve:
				m.pending = append(m.pending, m.reserve())
			case histComplete:
				if len(m.pending) == 0 {
					continue
				}
				seq := m.pending[0]
				m.pending = m.pending[1:]
				if seq+inFlight < a.head {
					m.unsure[seq] = true // the reader may have passed it, unwritten, and never come back
				}
				m.write(seq, int(p.next()))
			case histJump:
				from := a.head
				a.head += uint64(p.next())<<8 | uint64(p.next())
				if a.head > from {
					m.holes = append(m.holes, [2]uint64{from, a.head})
				}
			case histStamped:
				m.stamped(int(p.next()))
			case histHeadFails:
				a.headFails = true
			case histRingFails:
				a.ringFail = true
			case histCorrupt:
				i := uint64(p.next())
				var v uint64
				for range 8 {
					v = v<<8 | uint64(p.next())
				}
				s := &a.slots[i/2%size]
				if i%2 == 0 {
					s.Hash = v
				} else {
					s.Seq = v
				}
				m.dirty = true
			}
		}
	})
}

// histModel writes the ring of hashes as the sock_ops program does
// (record_tuple: hash, then seq + 1, at slot seq & (size − 1)) and knows
// what it wrote.
type histModel struct {
	t       *testing.T
	h       *TupleHistory
	a       *histArrays
	size    uint64
	byConn  [][]uint64      // the sequence numbers written for each of histConns
	unsure  map[uint64]bool // written, but the reader may miss it (written too late, or overwritten before it was read)
	pending []uint64        // reserved, not yet written
	holes   [][2]uint64     // [from, to): sequence numbers never written (before the first stamp, head jumps, overwritten)
	owner   []uint64        // by slot: 1 + the sequence number the model last wrote there, 0: none
	dirty   bool            // the ring holds bytes the program would not write
}

func (m *histModel) reserve() uint64 {
	seq := m.a.head
	m.a.head++
	return seq
}

func (m *histModel) write(seq uint64, conn int) {
	conn %= len(fuzzConns) // the last of histConns is never stamped
	c := histConns[conn]
	key := tupleKey(c.netns, c.local, c.remote)
	i := seq & (m.size - 1)
	if o := m.owner[i]; o > seq+1 {
		// A write after the ring lapped it replaces a later stamp: that
		// one's hash is gone, and its slot looks unwritten to the reader.
		m.unsure[o-1] = true
		m.holes = append(m.holes, [2]uint64{o - 1, o})
	}
	m.a.slots[i] = ipngbpf.SockopsIpngRingSlot{Hash: tupleHash(&key), Seq: seq + 1}
	m.owner[i] = seq + 1
	m.byConn[conn] = append(m.byConn[conn], seq)
}

// stamped asks Stamped for histConns[conn] and checks its answer.
func (m *histModel) stamped(conn int) {
	t := m.t
	conn %= len(histConns)
	c := histConns[conn]
	got, err := m.h.Stamped(c.netns, c.local, c.remote)
	if err != nil {
		if !errors.Is(err, errHeadRead) && !errors.Is(err, errRingRead) {
			t.Fatalf("Stamped: %v", err)
		}
		if got {
			t.Fatalf("Stamped failed (%v) and said stamped", err)
		}
		return
	}
	if limit := m.size + m.size/4; uint64(len(m.h.index)) > limit {
		t.Fatalf("index holds %d hashes, more than 1.25 × the window of %d", len(m.h.index), m.size)
	}
	if m.dirty {
		return
	}
	head := m.a.head
	lo := uint64(0) // the window: the last Window() sequence numbers
	if head > m.size {
		lo = head - m.size
	}
	// b: the first slot of the window the reader cannot pass yet, an
	// unwritten one within inFlight of the head; every slot before it
	// has been read.
	from := lo
	if head > inFlight && head-inFlight > from {
		from = head - inFlight
	}
	b := head
	for _, p := range m.pending {
		if p >= from && p < b {
			b = p
		}
	}
	for _, hole := range m.holes {
		if hole[1] > from && hole[0] < b {
			b = max(hole[0], from)
		}
	}
	var seen, sure bool // a stamp in the window; one the reader must have read
	for _, s := range m.byConn[conn] {
		if s >= lo {
			seen = true
			if s < b && !m.unsure[s] {
				sure = true
			}
		}
	}
	switch {
	case got && !seen:
		t.Fatalf("Stamped(%d %s %s) = true; its stamps %v, none in the window [%d, %d) (window %d)",
			c.netns, c.local, c.remote, m.byConn[conn], lo, head, m.size)
	case !got && sure:
		t.Fatalf("Stamped(%d %s %s) = false; its stamps %v, one in the window [%d, %d) read so far (head %d, window %d)",
			c.netns, c.local, c.remote, m.byConn[conn], lo, b, head, m.size)
	}
}

// checkRingSize: the ring of hashes for a 4-tuple map of n entries holds
// at least TupleRingFactor × n (and at least 1), rounded up to a power of
// two. Checked for every n whose ring fits the uint32 of a map's size
// (the configuration allows at most 2^24 entries).
func checkRingSize(t *testing.T, n uint32) {
	if uint64(n)*TupleRingFactor > 1<<31 {
		return
	}
	r := uint64(tupleRingSize(n))
	want := max(uint64(n)*TupleRingFactor, 1)
	if bits.OnesCount64(r) != 1 || r < want || r/2 >= want {
		t.Fatalf("tupleRingSize(%d) = %d; want the power of two at or above %d", n, r, want)
	}
}
