package attribution

import (
	"crypto/tls"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/internal/testenv"
)

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "bpf", "fallback"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("ebpf"); err == nil || !strings.Contains(err.Error(), "want auto, bpf or fallback") {
		t.Errorf("ParseMode(ebpf) = %v", err)
	}
}

func TestNewModes(t *testing.T) {
	tags := newBindings()
	if _, err := New(Options{Mode: ModeBPF, Bindings: tags, BPFError: errors.New("missing CAP_BPF")}); err == nil || !strings.Contains(err.Error(), "missing CAP_BPF") {
		t.Errorf("mode bpf without maps: %v", err)
	}
	a, err := New(Options{Mode: ModeAuto, Bindings: tags})
	if err != nil || a.UsesBPF() || !a.UsesPktinfo() {
		t.Errorf("mode auto without maps: %+v, %v", a, err)
	}
	if _, err := New(Options{Mode: ModeAuto}); err == nil {
		t.Error("New without bindings succeeded")
	}
}

// TestListenerFallback: a server wrapped by Listen in auto mode without BPF
// attributes loopback connections of both families to lo and its tag, and
// counts the fallback.
func TestListenerFallback(t *testing.T) {
	a, err := New(Options{Mode: ModeAuto, Bindings: newBindings()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(t.Context(), "tcp", "[::]:0", a)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		network, host string
		fam           bindings.Family
	}{{"tcp4", "127.0.0.1", bindings.FamilyIPv4}, {"tcp6", "::1", bindings.FamilyIPv6}} {
		c, err := net.Dial(tc.network, net.JoinHostPort(tc.host, port))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		info, ok := InfoOf(tls.Server(s, &tls.Config{})) // seen through a wrapper
		if !ok {
			t.Fatal("InfoOf found no attribution")
		}
		if info.Tag != "loopback" || info.Device != "lo" || !info.Bound || info.Family != tc.fam || info.Method != MethodPktinfo ||
			info.Local.Addr().String() != tc.host || info.Remote != c.LocalAddr().(*net.TCPAddr).AddrPort() {
			t.Errorf("%s: info = %+v", tc.host, info)
		}
		c.Close()
		s.Close()
	}
	if got := a.Fallbacks()["bpf_unavailable"]; got != 2 {
		t.Errorf("fallbacks = %v, want bpf_unavailable 2", a.Fallbacks())
	}
	if _, ok := InfoOf(&net.TCPConn{}); ok {
		t.Error("InfoOf found attribution on a plain connection")
	}
}

func TestNewListenerRejectsMPTCP(t *testing.T) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		testenv.Skip(t, "no MPTCP here: "+err.Error())
	}
	defer l.Close()
	rc, _ := l.(*net.TCPListener).SyscallConn()
	var proto int
	rc.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if proto != unix.IPPROTO_MPTCP {
		testenv.Skip(t, "kernel gave a plain TCP socket: MPTCP disabled")
	}
	a, _ := New(Options{Mode: ModeFallback, Bindings: newBindings()})
	if _, err := NewListener(l, a); err == nil || !strings.Contains(err.Error(), "MPTCP") {
		t.Errorf("NewListener on an MPTCP listener: %v, want an error naming MPTCP", err)
	}
}
