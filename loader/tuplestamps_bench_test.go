package loader

import (
	"net/netip"
	"testing"
	"unsafe"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// BenchmarkTupleStampsSteady is the agent's side of the ring of stamps
// under the nginx ingest with every request on a new connection, in the
// steady state of a full ring (262 144 slots, the default): per op, one
// stamp written to the ring (as the program writes it), indexed by a Sync
// once per 256 stamps (a batch of lines), and looked up once (the line of
// that connection, lines read in a slightly different order than
// stamped). No BPF: the ring is in memory, as in FuzzTupleStamps.
func BenchmarkTupleStampsSteady(b *testing.B) {
	const size, batch = 1 << 18, 256
	mem := make([]byte, size*uint64(stampSlotSize))
	head := &ringHead{}
	r := newTupleStamps(head, mem, size)
	local := netip.MustParseAddrPort("192.0.2.10:443")
	remote := func(seq uint64) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(seq >> 24), byte(seq >> 16)}), uint16(seq))
	}
	write := func(seq uint64) {
		s := (*ipngbpf.SockopsIpngStampSlot)(unsafe.Pointer(&mem[(seq&(size-1))*uint64(stampSlotSize)]))
		s.Seq = 0
		s.Stamp.Tuple = tupleKey(1, local, remote(seq))
		s.Stamp.Ifindex = 2
		s.Seq = seq + 1
	}
	var st Stamp
	step := func() {
		first := head.head
		for range batch {
			write(head.head)
			head.head++
		}
		if err := r.Sync(); err != nil {
			b.Fatal(err)
		}
		// The lines of a batch come in pairs swapped: nginx logs
		// connections in about the order it accepted them.
		for i := range uint64(batch) {
			seq := first + i ^ 1
			if ok, err := r.Lookup(1, local, remote(seq), &st); !ok || err != nil {
				b.Fatalf("stamp %d not found (%v)", seq, err)
			}
		}
	}
	for range 3 * size / batch { // past the first laps of the ring
		step()
	}
	b.ResetTimer()
	for n := 0; n < b.N; n += batch {
		step()
	}
}
