package loader

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/family"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestLookups: the typed lookups find the same stamp of an accepted
// connection (by fd, by socket cookie, by 4-tuple), report an unstamped
// socket as not found, and allocate nothing (the 4-tuple through a
// TupleStamps reader).
func TestLookups(t *testing.T) {
	testenv.RequireRoot(t)
	cg, err := ProcessCgroup()
	if err != nil {
		testenv.Skip(t, err.Error())
	}
	p, err := Load(Config{Cgroup: cg, PinDir: pinDir(t), Tuples: true, SkStorage: true}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	m := p.Maps()

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	fdOf := func(c net.Conn) int {
		f, err := c.(*net.TCPConn).File() // a dup, open until the test ends
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return int(f.Fd())
	}
	fd, clientFd := fdOf(server), fdOf(client)
	local := server.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := server.RemoteAddr().(*net.TCPAddr).AddrPort()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	netns, err := NetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		t.Fatal(err)
	}

	byFd, ok, err := m.LookupFd(fd)
	if err != nil || !ok {
		t.Fatalf("LookupFd(accepted) = %v, %v", ok, err)
	}
	if byFd.Ifindex != uint32(lo.Index) || byFd.Family != family.IPv4 || byFd.Source != SourceSKB ||
		byFd.Local != local || byFd.Remote != remote || byFd.Cookie != cookie || byFd.NetnsCookie != netns {
		t.Errorf("LookupFd = %+v, want lo (%d), ipv4, skb, %s ← %s, cookie %d, netns %d", byFd, lo.Index, local, remote, cookie, netns)
	}
	if s, ok, err := m.LookupCookie(cookie); err != nil || !ok || s != byFd {
		t.Errorf("LookupCookie = %+v, %v, %v; want %+v", s, ok, err, byFd)
	}
	// The tuple map is keyed v4-mapped: an IPv4 address finds it.
	if s, ok, err := m.LookupTuple(netns, netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), remote); err != nil || !ok || s != byFd {
		t.Errorf("LookupTuple = %+v, %v, %v; want %+v", s, ok, err, byFd)
	}

	// A program loaded without socket storage (the default but for the
	// agent's own proxy) has no ipng_sk: not found, no error.
	noSk := *m
	noSk.Sk = nil
	if s, ok, err := noSk.LookupFd(fd); ok || err != nil {
		t.Errorf("LookupFd without socket storage = %+v, %v, %v; want not found", s, ok, err)
	}

	// The client's socket was not accepted: no stamp, no error.
	if s, ok, err := m.LookupFd(clientFd); ok || err != nil {
		t.Errorf("LookupFd(client) = %+v, %v, %v; want not found", s, ok, err)
	}
	if _, ok, err := m.LookupCookie(cookie + 1<<40); ok || err != nil {
		t.Errorf("LookupCookie(unknown) = %v, %v; want not found", ok, err)
	}
	if _, ok, err := m.LookupTuple(netns+1, local, remote); ok || err != nil {
		t.Errorf("LookupTuple(other netns) = %v, %v; want not found", ok, err)
	}

	// A reader that keeps the ring of stamps mapped looks up without a
	// system call and without allocating.
	ts, err := m.NewTupleStamps()
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if err := ts.Sync(); err != nil {
		t.Fatal(err)
	}
	var byTuple Stamp
	if ok, err := ts.Lookup(netns, local, remote, &byTuple); err != nil || !ok || byTuple != byFd {
		t.Errorf("TupleStamps.Lookup = %+v, %v, %v; want %+v", byTuple, ok, err, byFd)
	}
	for name, fn := range map[string]func(){
		"LookupFd":           func() { m.LookupFd(fd) },
		"LookupCookie":       func() { m.LookupCookie(cookie) },
		"TupleStamps.Lookup": func() { ts.Lookup(netns, local, remote, &byTuple) },
	} {
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %.1f allocations per call, want 0", name, n)
		}
	}
}

// TestDevice: the stamp's interface name, NUL-padded, compared without
// allocating.
func TestDevice(t *testing.T) {
	var d Device
	copy(d[:], "gre-maglev1")
	if d.String() != "gre-maglev1" || !d.Is("gre-maglev1") || d.Is("gre-maglev") || d.Is("gre-maglev12") {
		t.Errorf("device %q: String/Is disagree", d.String())
	}
	var full Device
	copy(full[:], "0123456789abcdef")
	if full.String() != "0123456789abcdef" || !full.Is("0123456789abcdef") {
		t.Errorf("a name filling the array: %q", full.String())
	}
	var empty Device
	if empty.String() != "" || !empty.Is("") || empty.Is("lo") {
		t.Errorf("empty device: %q", empty.String())
	}
	if n := testing.AllocsPerRun(100, func() { d.Is("gre-maglev1") }); n != 0 {
		t.Errorf("Is allocates %.1f", n)
	}
}
