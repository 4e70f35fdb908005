package handshake

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// sizeofInetDiagMsg is the size of struct inet_diag_msg (linux/inet_diag.h),
// the payload of every SOCK_DIAG_BY_FAMILY answer.
const sizeofInetDiagMsg = 72

// parseDiag parses one datagram of NETLINK_SOCK_DIAG answers to the dump
// request seq (what one recvfrom returns) and appends the source ports of
// the listening sockets to ports. done reports the end of the dump
// (NLMSG_DONE, or an NLMSG_ERROR acknowledgement without error); the rest
// of the datagram is then only checked for its framing. Messages of
// another sequence number (an earlier dump's) are skipped. A datagram whose framing is
// broken (a header shorter than its own size or longer than what is left,
// bytes after the last message), an NLMSG_ERROR without its error code or
// an answer shorter than an inet_diag_msg is an error, never ports; an
// NLMSG_ERROR with an error code returns it as a unix.Errno. Pure: the
// fuzz target FuzzParseDiag feeds it arbitrary bytes.
func parseDiag(b []byte, seq uint32, ports []uint16) (_ []uint16, done bool, _ error) {
	ne := binary.NativeEndian
	for off := 0; off < len(b); {
		rest := b[off:]
		if len(rest) < unix.NLMSG_HDRLEN {
			return nil, false, fmt.Errorf("netlink message at byte %d: %d bytes, shorter than its header", off, len(rest))
		}
		l := uint64(ne.Uint32(rest[0:4]))
		if l < unix.NLMSG_HDRLEN || (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1) > uint64(len(rest)) {
			return nil, false, fmt.Errorf("netlink message at byte %d: length %d, %d bytes left", off, l, len(rest))
		}
		typ, mseq := ne.Uint16(rest[4:6]), ne.Uint32(rest[8:12])
		data := rest[unix.NLMSG_HDRLEN:l]
		off += int((l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1))
		if done || mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_DONE:
			done = true
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return nil, false, errors.New("short netlink error")
			}
			if e := int32(ne.Uint32(data)); e != 0 {
				return nil, false, unix.Errno(-e)
			}
			done = true
		case unix.SOCK_DIAG_BY_FAMILY:
			// inet_diag_msg: family, state, timer, retrans, then the
			// socket id, whose source port comes first (big endian).
			if len(data) < sizeofInetDiagMsg {
				return nil, false, fmt.Errorf("sock_diag answer of %d bytes, shorter than an inet_diag_msg (%d)", len(data), sizeofInetDiagMsg)
			}
			if data[1] != tcpListen {
				continue
			}
			ports = append(ports, binary.BigEndian.Uint16(data[4:6]))
		}
	}
	return ports, done, nil
}
