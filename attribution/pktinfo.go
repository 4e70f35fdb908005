package attribution

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
)

// The fallback is the original nginx module's method and needs no
// privilege: with IP_PKTINFO / IPV6_RECVPKTINFO set on the listening socket,
// the kernel keeps the ingress ifindex of each accepted connection's
// handshake, and getsockopt(IP_PKTOPTIONS) (IPv4, including v4-mapped) or
// getsockopt(IPV6_2292PKTOPTIONS) (native IPv6) on the accepted socket
// returns it as a pktinfo control message.

// EnablePktinfo sets IP_PKTINFO (and IPV6_RECVPKTINFO on an AF_INET6
// socket) on a listening socket, so that connections it accepts from now on
// can be resolved by the fallback.
func EnablePktinfo(fd int) error {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return fmt.Errorf("setting IP_PKTINFO: %w", err)
	}
	if _, v6 := sa.(*unix.SockaddrInet6); v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return fmt.Errorf("setting IPV6_RECVPKTINFO: %w", err)
		}
	}
	return nil
}

// errNoPktinfo: the socket's options carry no pktinfo (the listener did not
// have IP_PKTINFO set when the connection arrived).
var errNoPktinfo = errors.New("no pktinfo on the accepted socket")

// pktinfoBufSize fits an in6_pktinfo cmsg plus the other 2292 options the
// kernel may add (hop limit, tclass) with room to spare.
const pktinfoBufSize = 256

// PktinfoIfindex reads the ingress ifindex of an accepted socket whose
// listener had EnablePktinfo. fam picks the option: IPv4 (and v4-mapped
// IPv6) uses IP_PKTOPTIONS; on a native IPv6 connection that option
// reports ifindex 0, so IPV6_2292PKTOPTIONS is used.
func PktinfoIfindex(fd int, fam bindings.Family) (uint32, error) {
	var buf [pktinfoBufSize]byte
	level, opt := unix.IPPROTO_IP, unix.IP_PKTOPTIONS
	if fam == bindings.FamilyIPv6 {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_2292PKTOPTIONS
	}
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("getsockopt pktoptions: %w", syscall.Errno(errno))
	}
	if n > uint32(len(buf)) {
		n = uint32(len(buf))
	}
	return parsePktinfo(buf[:n])
}

// parsePktinfo walks the control messages in b and returns the ifindex of
// the first IP_PKTINFO, IPV6_PKTINFO or IPV6_2292PKTINFO message. It does
// not allocate.
func parsePktinfo(b []byte) (uint32, error) {
	const hdr = unix.SizeofCmsghdr
	for len(b) > 0 {
		if len(b) < hdr {
			return 0, fmt.Errorf("truncated control message header (%d bytes)", len(b))
		}
		l := binary.NativeEndian.Uint64(b[0:8])
		level := int32(binary.NativeEndian.Uint32(b[8:12]))
		typ := int32(binary.NativeEndian.Uint32(b[12:16]))
		if l < hdr || l > uint64(len(b)) {
			return 0, fmt.Errorf("control message length %d out of range (%d bytes left)", l, len(b))
		}
		data := b[hdr:l]
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO:
			// struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst, ipi_addr; }
			if len(data) < unix.SizeofInet4Pktinfo {
				return 0, fmt.Errorf("short in_pktinfo (%d bytes)", len(data))
			}
			return binary.NativeEndian.Uint32(data[0:4]), nil
		case level == unix.IPPROTO_IPV6 && (typ == unix.IPV6_PKTINFO || typ == unix.IPV6_2292PKTINFO):
			// struct in6_pktinfo { struct in6_addr ipi6_addr; int ipi6_ifindex; }
			if len(data) < unix.SizeofInet6Pktinfo {
				return 0, fmt.Errorf("short in6_pktinfo (%d bytes)", len(data))
			}
			return binary.NativeEndian.Uint32(data[16:20]), nil
		}
		next := cmsgAlign(l)
		if next >= uint64(len(b)) {
			break
		}
		b = b[next:]
	}
	return 0, errNoPktinfo
}

func cmsgAlign(l uint64) uint64 { return (l + 7) &^ 7 }
