package handshake

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// packet is an Ethernet + IPv4 + TCP frame to port 80 with the given TCP
// flags (the test run starts the network header after the Ethernet one).
func packet(flags byte) []byte {
	p := make([]byte, 14+20+20)
	binary.BigEndian.PutUint16(p[12:], 0x0800)
	ip := p[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = 6 // TCP
	copy(ip[12:], []byte{10, 5, 0, 2})
	copy(ip[16:], []byte{192, 0, 2, 10})
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return p
}

// BenchmarkIngress is the tc programs' cost per packet in the kernel
// (BPF_PROG_TEST_RUN, repeated b.N times): an ACK of an established
// connection (what nearly every packet is) through the Ethernet variant
// and through the generic (l3) one, a SYN to a counted port (counted, and
// its 4-tuple remembered), and at egress an ACK and a SYN-ACK from a port
// out of scope (parsed, the port looked up, not counted).
//
//	sudo go test -run '^$' -bench Ingress ./handshake/
func BenchmarkIngress(b *testing.B) {
	testenv.RequireRoot(b)
	m := &Monitor{log: discard(), att: map[uint32]*attachment{}, known: map[uint32]device{}}
	if err := m.loadOnly(); err != nil {
		b.Fatal(err)
	}
	defer m.objs.Close()
	if err := m.setPorts(Config{Ports: []uint16{80}}); err != nil {
		b.Fatal(err)
	}
	// The floor: a program that only returns, run the same way.
	noop, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer noop.Close()
	for _, tc := range []struct {
		name  string
		flags byte
	}{{"noop", 0x10}, {"ack", 0x10}, {"ack-l3", 0x10}, {"syn", 0x02}, {"egress-ack", 0x10}, {"egress-synack", 0x12}} {
		b.Run(tc.name, func(b *testing.B) {
			prog := m.objs.IpngHsIngress
			switch tc.name {
			case "ack-l3":
				prog = m.objs.IpngHsInL3
			case "egress-ack", "egress-synack":
				prog = m.objs.IpngHsEgress
			case "noop":
				prog = noop
			}
			ret, d, err := prog.Benchmark(packet(tc.flags), b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			if int32(ret) != -1 {
				b.Fatalf("program returned %d, want TC_ACT_UNSPEC (-1)", int32(ret))
			}
			b.ReportMetric(float64(d.Nanoseconds()), "kernel-ns/packet")
		})
	}
}
