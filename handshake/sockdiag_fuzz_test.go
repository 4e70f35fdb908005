package handshake

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// nlMsg is one netlink message as the test encodes and decodes it,
// independently of parseDiag.
type nlMsg struct {
	typ, flags uint16
	seq, pid   uint32
	data       []byte
	length     uint32 // nlmsg_len; 0: header + len(data), what the kernel sends
}

// diagMsg is struct inet_diag_msg (linux/inet_diag.h): the fields a
// SOCK_DIAG_BY_FAMILY answer carries, in order.
type diagMsg struct {
	family, state, timer, retrans uint8
	sport, dport                  uint16 // big endian on the wire
	src, dst                      [16]byte
	ifindex                       uint32
	cookie                        uint64
	expires, rqueue, wqueue       uint32
	uid, inode                    uint32
}

func (d diagMsg) bytes() []byte {
	ne := binary.NativeEndian
	b := []byte{d.family, d.state, d.timer, d.retrans}
	b = binary.BigEndian.AppendUint16(b, d.sport)
	b = binary.BigEndian.AppendUint16(b, d.dport)
	b = append(b, d.src[:]...)
	b = append(b, d.dst[:]...)
	b = ne.AppendUint32(b, d.ifindex)
	b = ne.AppendUint64(b, d.cookie)
	for _, v := range []uint32{d.expires, d.rqueue, d.wqueue, d.uid, d.inode} {
		b = ne.AppendUint32(b, v)
	}
	return b
}

// decodeDiagMsg is the inverse of bytes, for a payload of at least
// sizeofInetDiagMsg bytes.
func decodeDiagMsg(b []byte) diagMsg {
	ne := binary.NativeEndian
	d := diagMsg{family: b[0], state: b[1], timer: b[2], retrans: b[3],
		sport: binary.BigEndian.Uint16(b[4:]), dport: binary.BigEndian.Uint16(b[6:]),
		ifindex: ne.Uint32(b[40:]), cookie: ne.Uint64(b[44:]),
		expires: ne.Uint32(b[52:]), rqueue: ne.Uint32(b[56:]), wqueue: ne.Uint32(b[60:]),
		uid: ne.Uint32(b[64:]), inode: ne.Uint32(b[68:])}
	copy(d.src[:], b[8:24])
	copy(d.dst[:], b[24:40])
	return d
}

// encodeMsgs lays messages out as the kernel does: each header, its
// payload, zero padding to 4 bytes.
func encodeMsgs(msgs ...nlMsg) []byte {
	ne := binary.NativeEndian
	var b []byte
	for _, m := range msgs {
		l := m.length
		if l == 0 {
			l = uint32(unix.NLMSG_HDRLEN + len(m.data))
		}
		b = ne.AppendUint32(b, l)
		b = ne.AppendUint16(b, m.typ)
		b = ne.AppendUint16(b, m.flags)
		b = ne.AppendUint32(b, m.seq)
		b = ne.AppendUint32(b, m.pid)
		b = append(b, m.data...)
		for len(b)%unix.NLMSG_ALIGNTO != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// decodeMsgs splits a datagram into messages, or says why its framing is
// broken: written from netlink(7), not from parseDiag.
func decodeMsgs(b []byte) ([]nlMsg, error) {
	ne := binary.NativeEndian
	var msgs []nlMsg
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return nil, fmt.Errorf("%d bytes after the last message", len(b))
		}
		l := int(ne.Uint32(b))
		padded := (l + 3) / 4 * 4
		if l < unix.NLMSG_HDRLEN || padded > len(b) {
			return nil, fmt.Errorf("nlmsg_len %d with %d bytes left", l, len(b))
		}
		msgs = append(msgs, nlMsg{length: uint32(l), typ: ne.Uint16(b[4:]), flags: ne.Uint16(b[6:]),
			seq: ne.Uint32(b[8:]), pid: ne.Uint32(b[12:]), data: b[unix.NLMSG_HDRLEN:l]})
		b = b[padded:]
	}
	return msgs, nil
}

// expected is what parseDiag must make of msgs for dump seq: the source
// ports of the listening sockets of seq up to the end of the dump, and
// whether the datagram holds that end; an error for a message of seq that
// is malformed before the end (a short error or answer) or an error code.
func expected(msgs []nlMsg, seq uint32) (ports []uint16, done bool, errno unix.Errno, err error) {
	for _, m := range msgs {
		if m.seq != seq {
			continue
		}
		switch m.typ {
		case unix.NLMSG_DONE:
			return ports, true, 0, nil
		case unix.NLMSG_ERROR:
			if len(m.data) < 4 {
				return nil, false, 0, errors.New("short error")
			}
			if e := int32(binary.NativeEndian.Uint32(m.data)); e != 0 {
				return nil, false, unix.Errno(-e), errors.New("error code")
			}
			return ports, true, 0, nil
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(m.data) < sizeofInetDiagMsg {
				return nil, false, 0, errors.New("short answer")
			}
			if d := decodeDiagMsg(m.data); d.state == tcpListen {
				ports = append(ports, d.sport)
			}
		}
	}
	return ports, false, 0, nil
}

// listener is an answer for a socket in state (10: listening) on port.
func diagListener(seq uint32, port uint16, state uint8) nlMsg {
	d := diagMsg{family: unix.AF_INET6, state: state, sport: port, dport: 0, ifindex: 1,
		cookie: 0x1122334455667788, uid: 0, inode: 4242}
	d.src[15] = 1
	return nlMsg{typ: unix.SOCK_DIAG_BY_FAMILY, flags: unix.NLM_F_MULTI, seq: seq, pid: 0, data: d.bytes()}
}

func diagDone(seq uint32) nlMsg {
	return nlMsg{typ: unix.NLMSG_DONE, flags: unix.NLM_F_MULTI, seq: seq, data: []byte{0, 0, 0, 0}}
}

func diagErr(seq uint32, errno int32) nlMsg {
	// struct nlmsgerr: the error code, then the request's header.
	d := binary.NativeEndian.AppendUint32(nil, uint32(errno))
	d = append(d, make([]byte, unix.NLMSG_HDRLEN)...)
	return nlMsg{typ: unix.NLMSG_ERROR, seq: seq, data: d}
}

// FuzzParseDiag feeds parseDiag (the handshake monitor's reading of the
// NETLINK_SOCK_DIAG answers that list listening ports) arbitrary datagrams
// for the dump request seq, and checks it against the test's own decoder
// and encoder (written from netlink(7) and linux/inet_diag.h):
//   - it never panics (no read outside the datagram);
//   - a datagram whose framing is broken (a header shorter than 16 bytes or
//     longer than the bytes left, bytes after the last message) is an
//     error, never ports;
//   - otherwise the decoder's messages, encoded again, are the datagram
//     byte for byte but for the padding (the decoder and encoder agree, so
//     the messages below are what the datagram says), and parseDiag returns
//     exactly the source ports of the answers of seq in state LISTEN, in
//     order, up to the end of the dump (NLMSG_DONE or an NLMSG_ERROR
//     acknowledgement; what follows it is not read but for its framing)
//     and says whether it saw the end; answers of other
//     dumps and other states give no port; an error code is returned as
//     that unix.Errno; a message of seq too short for its type (an error
//     without its code, an answer shorter than an inet_diag_msg) is an
//     error, never ports;
//   - the ports passed in are kept, in front.
func FuzzParseDiag(f *testing.F) {
	const s = 7
	for _, msgs := range [][]nlMsg{
		{},
		{diagDone(s)},
		{diagListener(s, 80, tcpListen), diagListener(s, 443, tcpListen), diagDone(s)},
		{diagListener(s, 80, tcpListen), diagListener(s, 8080, 1)},                                        // more datagrams to come; an established socket
		{diagListener(s-1, 22, tcpListen), diagListener(s, 443, tcpListen), diagDone(s - 1), diagDone(s)}, // an earlier dump's answers
		{diagListener(s, 80, tcpListen), diagErr(s, -int32(unix.ENOENT))},                                 // no tcp_diag
		{diagListener(s, 80, tcpListen), diagErr(s, 0)},                                                   // an acknowledgement ends the dump
		{diagErr(s, -int32(unix.EAFNOSUPPORT)), diagListener(s, 80, tcpListen)},
		{{typ: unix.NLMSG_ERROR, seq: s, data: []byte{1, 2}}},                                    // an error without its code
		{{typ: unix.SOCK_DIAG_BY_FAMILY, seq: s, data: diagListener(s, 80, tcpListen).data[:6]}}, // an answer cut after the port
		{{typ: unix.SOCK_DIAG_BY_FAMILY, seq: s, data: diagListener(s, 80, tcpListen).data[:71]}},
		{{typ: unix.SOCK_DIAG_BY_FAMILY, seq: s, data: append(diagListener(s, 80, tcpListen).data, 1, 2, 3)}}, // attributes after it
		{diagDone(s), {typ: 0, seq: s, length: 3}},                                                            // broken framing after the end
		{{typ: unix.NLMSG_NOOP, seq: s}, diagListener(s, 65535, tcpListen), {typ: unix.NLMSG_OVERRUN, seq: s}, diagDone(s)},
	} {
		f.Add(uint32(s), encodeMsgs(msgs...))
	}
	whole := encodeMsgs(diagListener(s, 80, tcpListen), diagDone(s))
	f.Add(uint32(s), whole[:len(whole)-1])                                                // cut in the last message
	f.Add(uint32(s), append(slices.Clone(whole), 0, 0, 0, 0))                             // bytes after the last message
	f.Add(uint32(s), encodeMsgs(nlMsg{typ: unix.NLMSG_DONE, seq: s, length: 0xffffffff})) // a length past the end
	f.Add(uint32(s), encodeMsgs(nlMsg{typ: unix.NLMSG_DONE, seq: s, length: 15}))         // shorter than its header

	f.Fuzz(func(t *testing.T, seq uint32, b []byte) {
		prefix := []uint16{1, 2}
		ports, done, err := parseDiag(b, seq, slices.Clone(prefix))
		if err != nil && (ports != nil || done) {
			t.Fatalf("parseDiag: error %v with ports %v, done %v", err, ports, done)
		}
		msgs, ferr := decodeMsgs(b)
		if ferr != nil {
			if err == nil {
				t.Fatalf("broken framing (%v) accepted: ports %v, done %v", ferr, ports, done)
			}
			return
		}
		again := encodeMsgs(msgs...)
		if len(again) != len(b) {
			t.Fatalf("decoded and encoded again: %d bytes, the datagram %d", len(again), len(b))
		}
		for off, i := 0, 0; i < len(msgs); i++ {
			n := int(msgs[i].length)
			if !slices.Equal(again[off:off+n], b[off:off+n]) {
				t.Fatalf("message %d decoded and encoded again is %x, in the datagram %x", i, again[off:off+n], b[off:off+n])
			}
			off += (n + 3) / 4 * 4
		}
		for _, m := range msgs {
			if m.typ == unix.SOCK_DIAG_BY_FAMILY && len(m.data) >= sizeofInetDiagMsg {
				if d := m.data[:sizeofInetDiagMsg]; !slices.Equal(decodeDiagMsg(d).bytes(), d) {
					t.Fatalf("inet_diag_msg %x decoded and encoded again is %x", d, decodeDiagMsg(d).bytes())
				}
			}
		}
		want, wantDone, errno, werr := expected(msgs, seq)
		switch {
		case werr != nil && err == nil:
			t.Fatalf("accepted (ports %v, done %v); want an error (%v)", ports, done, werr)
		case werr == nil && err != nil:
			t.Fatalf("error %v; want ports %v, done %v", err, want, wantDone)
		case errno != 0 && !errors.Is(err, errno):
			t.Fatalf("error %v; want %v", err, errno)
		case werr == nil && (done != wantDone || !slices.Equal(ports, append(prefix, want...))):
			t.Fatalf("ports %v, done %v; want %v then %v, done %v", ports, done, prefix, want, wantDone)
		}
	})
}

// TestParseDiag: a dump over two datagrams, as the kernel sends it.
func TestParseDiag(t *testing.T) {
	ports, done, err := parseDiag(encodeMsgs(diagListener(3, 80, tcpListen), diagListener(3, 443, tcpListen)), 3, nil)
	if err != nil || done || !slices.Equal(ports, []uint16{80, 443}) {
		t.Fatalf("first datagram: %v, %v, %v; want [80 443], not done", ports, done, err)
	}
	ports, done, err = parseDiag(encodeMsgs(diagListener(3, 8443, tcpListen), diagDone(3)), 3, ports)
	if err != nil || !done || !slices.Equal(ports, []uint16{80, 443, 8443}) {
		t.Fatalf("second datagram: %v, %v, %v; want [80 443 8443], done", ports, done, err)
	}
	if _, _, err := parseDiag(encodeMsgs(diagErr(3, -int32(unix.ENOENT))), 3, nil); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("error message: %v, want ENOENT", err)
	}
}
