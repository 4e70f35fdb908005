package topo

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A minimal, test-local ingress-interface reader (production code has its
// own): set IP_PKTINFO and IPV6_RECVPKTINFO on the listener; on each
// accepted TCP socket getsockopt(IP_PKTOPTIONS) (IPv4, v4-mapped) or
// getsockopt(IPV6_2292PKTOPTIONS) (IPv6) returns a cmsg carrying the
// in_pktinfo / in6_pktinfo of the SYN, whose ifindex is the ingress device.

// pktinfoControl is a net.ListenConfig.Control function enabling both.
func pktinfoControl(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		if serr == nil && network != "tcp4" {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// ingressIfindex returns the ingress ifindex recorded for an accepted conn.
func ingressIfindex(c net.Conn) (uint32, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0, fmt.Errorf("not a *net.TCPConn: %T", c)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	level, opt := unix.IPPROTO_IPV6, unix.IPV6_2292PKTOPTIONS
	if tc.LocalAddr().(*net.TCPAddr).IP.To4() != nil { // IPv4 or v4-mapped
		level, opt = unix.IPPROTO_IP, unix.IP_PKTOPTIONS
	}
	buf := make([]byte, 256)
	n := uint32(len(buf))
	var errno syscall.Errno
	err = rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), uintptr(opt),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, fmt.Errorf("getsockopt(%d, %d): %w", level, opt, errno)
	}
	msgs, err := unix.ParseSocketControlMessage(buf[:n])
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= 12:
			return uint32(binary.NativeEndian.Uint32(m.Data[0:4])), nil // in_pktinfo.ipi_ifindex
		case m.Header.Level == unix.IPPROTO_IPV6 && (m.Header.Type == unix.IPV6_PKTINFO || m.Header.Type == unix.IPV6_2292PKTINFO) && len(m.Data) >= 20:
			return binary.NativeEndian.Uint32(m.Data[16:20]), nil // in6_pktinfo.ipi6_ifindex
		}
	}
	return 0, fmt.Errorf("no pktinfo cmsg in %d bytes from getsockopt(%d, %d)", n, level, opt)
}
