package handshake

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// frame describes one Ethernet frame for the tc programs.
type frame struct {
	v6       bool
	ipOpts   int  // IPv4 options, in 4-byte words
	proto    byte // 6 (TCP) unless set
	flags    byte // TCP flags
	src, dst uint16
	fragment bool // IPv4: a later fragment (offset 8)
}

func (f frame) bytes() []byte {
	proto := f.proto
	if proto == 0 {
		proto = 6
	}
	var p []byte
	if f.v6 {
		p = make([]byte, 14+40+20)
		binary.BigEndian.PutUint16(p[12:], 0x86dd)
		ip := p[14:]
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], 20)
		ip[6] = proto
		ip[7] = 64
		copy(ip[8:], netip.MustParseAddr("2001:db8:5::2").AsSlice())
		copy(ip[24:], netip.MustParseAddr("2001:db8:10::10").AsSlice())
	} else {
		hl := 20 + 4*f.ipOpts
		p = make([]byte, 14+hl+20)
		binary.BigEndian.PutUint16(p[12:], 0x0800)
		ip := p[14:]
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+20))
		if f.fragment {
			binary.BigEndian.PutUint16(ip[6:], 1) // offset 8 bytes
		}
		ip[8] = 64
		ip[9] = proto
		copy(ip[12:], []byte{10, 5, 0, 2})
		copy(ip[16:], []byte{192, 0, 2, 10})
		for i := 20; i < hl; i++ {
			ip[i] = 1 // NOP options
		}
	}
	tcp := p[len(p)-20:]
	binary.BigEndian.PutUint16(tcp[0:], f.src)
	binary.BigEndian.PutUint16(tcp[2:], f.dst)
	tcp[12] = 5 << 4
	tcp[13] = f.flags
	return p
}

// loadedMonitor loads the programs without attaching them, port 80
// counted; they are closed at the end of the test.
func loadedMonitor(t *testing.T) *Monitor {
	t.Helper()
	testenv.RequireRoot(t)
	m := &Monitor{log: discard(), att: map[uint32]*attachment{}, known: map[uint32]device{}}
	if err := m.loadOnly(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.objs.Close() })
	if err := m.setPorts(Config{Ports: []uint16{80}}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestProgramsCount runs both variants of the tc programs (the Ethernet one
// that reads the flags in place, and the generic one) over the same frames
// in the kernel (BPF_PROG_TEST_RUN): they count the same packets, and only
// SYNs (ingress) and SYN-ACKs (egress) of a counted port.
func TestProgramsCount(t *testing.T) {
	m := loadedMonitor(t)
	const (
		syn, ack, synack, fin, rst = 0x02, 0x10, 0x12, 0x11, 0x04
	)
	// Ingress frames: what each says is counted, by "family port".
	in := []struct {
		f    frame
		want string
	}{
		{frame{flags: ack, src: 40000, dst: 80}, ""},
		{frame{flags: syn, src: 40000, dst: 80}, "4 80"},
		{frame{flags: syn | 0x40 /* ECE */, src: 40001, dst: 80}, "4 80"},
		{frame{flags: syn, src: 40000, dst: 81}, ""}, // port not counted
		{frame{flags: synack, src: 40000, dst: 80}, ""},
		{frame{flags: fin, src: 40000, dst: 80}, ""},
		{frame{flags: rst, src: 40000, dst: 80}, ""},
		{frame{ipOpts: 2, flags: syn, src: 40002, dst: 80}, "4 80"}, // IPv4 options: the generic path
		{frame{ipOpts: 2, flags: ack, src: 40002, dst: 80}, ""},
		{frame{v6: true, flags: syn, src: 40000, dst: 80}, "6 80"},
		{frame{v6: true, flags: ack, src: 40000, dst: 80}, ""},
		{frame{v6: true, proto: 17, flags: syn, src: 40000, dst: 80}, ""}, // UDP
		{frame{proto: 17, flags: syn, src: 40000, dst: 80}, ""},           // UDP
		{frame{fragment: true, flags: syn, src: 40000, dst: 80}, ""},      // a later fragment
	}
	// Egress frames: SYN-ACKs from a counted port leaving the device.
	out := []struct {
		f    frame
		want string
	}{
		{frame{flags: synack, src: 80, dst: 40000}, "4 80"},
		{frame{v6: true, flags: synack, src: 80, dst: 40000}, "6 80"},
		{frame{flags: synack, src: 81, dst: 40000}, ""},
		{frame{flags: syn, src: 80, dst: 40000}, ""},
		{frame{flags: ack, src: 80, dst: 40000}, ""},
		{frame{ipOpts: 1, flags: synack, src: 80, dst: 40000}, "4 80"},
	}
	counts := func() map[string]Totals {
		t.Helper()
		cs, err := readCounts(m.objs.IpngHsCounts)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]Totals{}
		for _, c := range cs {
			k := fmt.Sprint(c.key.Family, " ", c.key.Port)
			tot := got[k]
			tot.add(c.Totals)
			got[k] = tot
			if err := m.objs.IpngHsCounts.Delete(c.key); err != nil {
				t.Fatal(err)
			}
		}
		return got
	}
	run := func(p *ebpf.Program, data []byte) {
		t.Helper()
		ret, err := p.Run(&ebpf.RunOptions{Data: data})
		if err != nil {
			t.Fatal(err)
		}
		if int32(ret) != -1 {
			t.Fatalf("program returned %d, want TC_ACT_UNSPEC (-1)", int32(ret))
		}
	}
	for _, v := range []struct {
		name    string
		in, out *ebpf.Program
	}{
		{"ethernet", m.objs.IpngHsIngress, m.objs.IpngHsEgress},
		{"l3", m.objs.IpngHsInL3, m.objs.IpngHsOutL3},
	} {
		counts() // empty the map
		for i, c := range in {
			run(v.in, c.f.bytes())
			got, want := counts(), map[string]Totals{}
			if c.want != "" {
				want[c.want] = Totals{SynReceived: 1}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s ingress, frame %d %+v: counted %v, want %v", v.name, i, c.f, got, want)
			}
		}
		for i, c := range out {
			run(v.out, c.f.bytes())
			got, want := counts(), map[string]Totals{}
			if c.want != "" {
				want[c.want] = Totals{SynackWrongEgress: 1}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s egress, frame %d %+v: counted %v, want %v", v.name, i, c.f, got, want)
			}
		}
	}
}

// TestSynSlots checks what the ingress programs leave for the sock_ops one:
// a SYN to a counted port leaves its 4-tuple (local = the destination) and
// its device in a slot of ipng_hs_syns on the CPU that ran the program;
// nothing else writes a slot (an uncounted port, an ACK, a SYN-ACK at
// egress).
func TestSynSlots(t *testing.T) {
	m := loadedMonitor(t)
	// slots returns the written slots of every CPU.
	slots := func() []ipngbpf.HandshakeIpngHsSlot {
		t.Helper()
		var got []ipngbpf.HandshakeIpngHsSlot
		var k uint32
		var vs []ipngbpf.HandshakeIpngHsSlot
		it := m.objs.IpngHsSyns.Iterate()
		for it.Next(&k, &vs) {
			for _, v := range vs {
				if v.Tup.Family != 0 {
					got = append(got, v)
				}
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return got
	}
	clear := func() {
		t.Helper()
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			t.Fatal(err)
		}
		for k := uint32(0); k < m.objs.IpngHsSyns.MaxEntries(); k++ {
			if err := m.objs.IpngHsSyns.Put(k, make([]ipngbpf.HandshakeIpngHsSlot, cpus)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tuple := func(v6 bool, local, remote string, lport, rport uint16) ipngbpf.HandshakeIpngHsTuple {
		tup := ipngbpf.HandshakeIpngHsTuple{LocalAddr: netip.MustParseAddr(local).As16(), RemoteAddr: netip.MustParseAddr(remote).As16(),
			LocalPort: lport, RemotePort: rport, Family: 4}
		if v6 {
			tup.Family = 6
		}
		return tup
	}
	const syn, ack, synack = 0x02, 0x10, 0x12
	for _, v := range []struct {
		name    string
		in, out *ebpf.Program
	}{
		{"ethernet", m.objs.IpngHsIngress, m.objs.IpngHsEgress},
		{"l3", m.objs.IpngHsInL3, m.objs.IpngHsOutL3},
	} {
		for _, c := range []struct {
			f    frame
			out  bool
			want *ipngbpf.HandshakeIpngHsTuple
		}{
			{f: frame{flags: syn, src: 40000, dst: 80}, want: ptr(tuple(false, "::ffff:192.0.2.10", "::ffff:10.5.0.2", 80, 40000))},
			{f: frame{ipOpts: 2, flags: syn, src: 40002, dst: 80}, want: ptr(tuple(false, "::ffff:192.0.2.10", "::ffff:10.5.0.2", 80, 40002))},
			{f: frame{v6: true, flags: syn, src: 40001, dst: 80}, want: ptr(tuple(true, "2001:db8:10::10", "2001:db8:5::2", 80, 40001))},
			{f: frame{flags: syn, src: 40000, dst: 81}},
			{f: frame{flags: ack, src: 40000, dst: 80}},
			{f: frame{flags: synack, src: 80, dst: 40000}, out: true},
			{f: frame{v6: true, flags: synack, src: 80, dst: 40000}, out: true},
		} {
			clear()
			p := v.in
			if c.out {
				p = v.out
			}
			if _, err := p.Run(&ebpf.RunOptions{Data: c.f.bytes()}); err != nil {
				t.Fatal(err)
			}
			got := slots()
			switch {
			case c.want == nil && len(got) != 0:
				t.Errorf("%s, %+v (egress %v): slots written %+v, want none", v.name, c.f, c.out, got)
			case c.want != nil && (len(got) != 1 || got[0].Tup != *c.want || got[0].Ifindex != 1):
				// BPF_PROG_TEST_RUN runs the program on the loopback device.
				t.Errorf("%s, %+v: slots written %+v, want one with %+v on ifindex 1", v.name, c.f, got, *c.want)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }
