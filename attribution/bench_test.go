package attribution

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/loader"
)

// acceptedFD returns an accepted loopback socket's fd and addresses; the
// client and server stay open until the benchmark ends.
func acceptedFD(b *testing.B, a *Attributor) (int, netip.AddrPort, netip.AddrPort) {
	ln, err := Listen(b.Context(), "tcp", "[::]:0", a)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	c, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	tc := s.(*Conn)
	f, err := tc.File() // a dup: the fd stays valid for the whole benchmark
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return int(f.Fd()), tc.info.Local, tc.info.Remote
}

func benchAttribute(b *testing.B, a *Attributor, want Method) {
	fd, local, remote := acceptedFD(b, a)
	if info := a.Attribute(fd, local, remote); info.Method != want || info.Ifindex == 0 {
		b.Fatalf("Attribute = %+v, want method %s", info, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		a.Attribute(fd, local, remote)
	}
}

func newBindings() *bindings.Resolver {
	r := bindings.NewResolver(bindings.Spec{DefaultTag: "direct", Bindings: []bindings.Binding{{Device: "lo", Tag: "loopback"}}}, nil)
	r.SetLinks([]bindings.Link{{Index: 1, Name: "lo"}})
	return r
}

// BenchmarkAttributeBPF: one accepted connection resolved through the
// sk_storage map (by fd; the agent's own proxy) or, without socket storage
// (the default program), the cookie map (SO_COOKIE), and the bindings table.
func BenchmarkAttributeBPF(b *testing.B) {
	testenv.RequireRoot(b)
	for _, arm := range []struct {
		name   string
		sk     bool
		method Method
	}{{"sk_storage", true, MethodSkStorage}, {"cookie", false, MethodCookie}} {
		b.Run(arm.name, func(b *testing.B) {
			p, err := loader.Load(loader.Config{Cgroup: processCgroup(b), SkStorage: arm.sk,
				PinDir: filepath.Join(loader.DefaultBPFFS, "ipng-bench-"+strconv.Itoa(os.Getpid()))}, nil)
			if err != nil {
				b.Fatalf("%+v", err)
			}
			defer p.Close()
			a, err := New(Options{Mode: ModeBPF, Maps: p.Maps(), Bindings: newBindings()})
			if err != nil {
				b.Fatal(err)
			}
			benchAttribute(b, a, arm.method)
		})
	}
}

// BenchmarkAttributePktinfo: the unprivileged fallback.
func BenchmarkAttributePktinfo(b *testing.B) {
	a, err := New(Options{Mode: ModeFallback, Bindings: newBindings()})
	if err != nil {
		b.Fatal(err)
	}
	benchAttribute(b, a, MethodPktinfo)
}

func processCgroup(b *testing.B) string {
	cg, err := loader.ProcessCgroup()
	if err != nil {
		b.Fatal(err)
	}
	return cg
}
