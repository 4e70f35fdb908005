package attribution

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// cmsg builds one control message as the kernel lays it out.
func cmsg(level, typ int32, data []byte) []byte {
	l := unix.SizeofCmsghdr + len(data)
	b := make([]byte, cmsgAlign(uint64(l)))
	binary.NativeEndian.PutUint64(b[0:8], uint64(l))
	binary.NativeEndian.PutUint32(b[8:12], uint32(level))
	binary.NativeEndian.PutUint32(b[12:16], uint32(typ))
	copy(b[unix.SizeofCmsghdr:], data)
	return b
}

func in4(ifindex uint32) []byte {
	b := make([]byte, unix.SizeofInet4Pktinfo)
	binary.NativeEndian.PutUint32(b, ifindex)
	return b
}

func in6(ifindex uint32) []byte {
	b := make([]byte, unix.SizeofInet6Pktinfo)
	binary.NativeEndian.PutUint32(b[16:], ifindex)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestParsePktinfo(t *testing.T) {
	hopLimit := cmsg(unix.IPPROTO_IPV6, unix.IPV6_2292HOPLIMIT, []byte{64, 0, 0, 0})
	tests := []struct {
		name    string
		in      []byte
		want    uint32
		wantErr string
	}{
		{"ipv4 pktinfo", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, in4(7)), 7, ""},
		{"ipv6 pktinfo", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6(12)), 12, ""},
		{"ipv6 rfc2292 pktinfo", cmsg(unix.IPPROTO_IPV6, unix.IPV6_2292PKTINFO, in6(3)), 3, ""},
		{"pktinfo after another option", cat(hopLimit, cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6(9))), 9, ""},
		{"first pktinfo wins", cat(cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, in4(4)), cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, in4(5))), 4, ""},
		{"empty", nil, 0, "no pktinfo"},
		{"only other options", hopLimit, 0, "no pktinfo"},
		{"ipv4 type at ipv6 level is not pktinfo", cmsg(unix.IPPROTO_IPV6, unix.IP_PKTINFO, in6(1)), 0, "no pktinfo"},
		{"truncated header", make([]byte, 10), 0, "truncated control message header"},
		{"length beyond buffer", func() []byte {
			b := cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, in4(7))
			binary.NativeEndian.PutUint64(b, 200)
			return b
		}(), 0, "out of range"},
		{"length below header", func() []byte {
			b := cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, in4(7))
			binary.NativeEndian.PutUint64(b, 4)
			return b
		}(), 0, "out of range"},
		{"short in_pktinfo", cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, []byte{1, 0}), 0, "short in_pktinfo"},
		{"short in6_pktinfo", cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in4(1)), 0, "short in6_pktinfo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePktinfo(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parsePktinfo() = %d, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parsePktinfo() = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func FuzzParsePktinfo(f *testing.F) {
	f.Add(cmsg(unix.IPPROTO_IP, unix.IP_PKTINFO, in4(7)))
	f.Add(cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6(12)))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parsePktinfo(b) })
}

func TestParsePktinfoAllocs(t *testing.T) {
	b := cmsg(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, in6(12))
	if n := testing.AllocsPerRun(100, func() { _, _ = parsePktinfo(b) }); n != 0 {
		t.Fatalf("parsePktinfo allocates %v times per call", n)
	}
}

// TestPktinfoLoopback runs the fallback for real on loopback (no privilege
// needed): a dual-stack wildcard listener, connections over IPv4, IPv6 and
// an explicitly v4-mapped address all resolve to lo's ifindex.
func TestPktinfoLoopback(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(t.Context(), "tcp", "[::]:0")
	if err != nil {
		testenv.Skip(t, "no IPv6 listener: "+err.Error())
	}
	defer ln.Close()
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var perr error
	rc.Control(func(fd uintptr) { perr = EnablePktinfo(int(fd)) })
	if perr != nil {
		t.Fatal(perr)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		network, addr string
		fam           bindings.Family
	}{
		{"tcp4", "127.0.0.1", bindings.FamilyIPv4},
		{"tcp6", "::1", bindings.FamilyIPv6},
		{"tcp6", "::ffff:127.0.0.1", bindings.FamilyIPv4},
	} {
		c, err := dial(tc.network, tc.addr, port)
		if err != nil {
			t.Fatalf("dial %s: %v", tc.addr, err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		src, _ := s.(*net.TCPConn).SyscallConn()
		var got uint32
		var gerr error
		src.Control(func(fd uintptr) { got, gerr = PktinfoIfindex(int(fd), tc.fam) })
		if gerr != nil || got != uint32(lo.Index) {
			t.Errorf("%s: PktinfoIfindex = %d, %v; want lo (%d)", tc.addr, got, gerr, lo.Index)
		}
		c.Close()
		s.Close()
	}
}

// dial connects like net.Dial, except that a v4-mapped address is dialled
// from an AF_INET6 socket, as a dual-stack client would (Go's net.Dial
// refuses v4-mapped addresses on tcp6).
func dial(network, addr string, port int) (net.Conn, error) {
	a := netip.MustParseAddr(addr)
	if !a.Is4In6() {
		return net.Dial(network, net.JoinHostPort(addr, strconv.Itoa(port)))
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet6{Port: port, Addr: a.As16()}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "mapped")
	defer f.Close()
	return net.FileConn(f)
}
