package loader

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"testing"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/family"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestTupleBatchLayout: the batch lookup program's copy of struct
// ipng_stamp is sockops.c's, field by field (the program copies the map's
// values byte for byte and the loader decodes them as sockops.c's).
func TestTupleBatchLayout(t *testing.T) {
	if err := sameLayout(reflect.TypeFor[ipngbpf.TuplelookupIpngStamp](), reflect.TypeFor[ipngbpf.SockopsIpngStamp]()); err != nil {
		t.Fatal(err)
	}
	if err := sameLayout(reflect.TypeFor[ipngbpf.TuplelookupIpngTuple](), reflect.TypeFor[ipngbpf.SockopsIpngTuple]()); err != nil {
		t.Fatal(err)
	}
	type other struct {
		A uint64
		B uint32
		C uint32
	}
	if sameLayout(reflect.TypeFor[other](), reflect.TypeFor[ipngbpf.SockopsIpngStamp]()) == nil {
		t.Fatal("sameLayout accepted a different struct")
	}
}

// TestTupleBatch: a batch finds the same stamps as one LookupTuple per key
// (found and missing keys mixed, both families, two network namespaces),
// stops at TupleBatchSize keys, can be reused after Reset, and allocates
// nothing per key.
func TestTupleBatch(t *testing.T) {
	m, err := NewTupleMaps(4096)
	if err != nil {
		testenv.Skip(t, "creating a BPF map (needs CAP_BPF): "+err.Error())
	}
	defer m.Close()
	b, err := m.NewTupleBatch()
	if err != nil {
		t.Fatalf("NewTupleBatch: %v", err)
	}
	defer b.Close()

	type key struct {
		netns         uint64
		local, remote netip.AddrPort
	}
	var keys []key
	for i := range TupleBatchSize + 10 {
		k := key{netns: 7, local: netip.MustParseAddrPort("192.0.2.10:80"),
			remote: netip.MustParseAddrPort(fmt.Sprintf("198.51.100.%d:%d", i%250+1, 40000+i))}
		switch i % 5 {
		case 1:
			k.local = netip.MustParseAddrPort("[2001:db8::10]:443")
			k.remote = netip.MustParseAddrPort(fmt.Sprintf("[2001:db8:1::%x]:%d", i, 30000+i))
		case 2:
			k.netns = 8
		}
		keys = append(keys, k)
		if i%3 == 0 {
			continue // never stamped
		}
		fam := family.IPv4
		if k.local.Addr().Is6() {
			fam = family.IPv6
		}
		s := Stamp{NetnsCookie: k.netns, Local: k.local, Remote: k.remote, Ifindex: uint32(i + 1), Family: fam,
			Source: SourceSKB, TagID: uint32(i % 7), Bound: i%2 == 0, Cookie: uint64(1000 + i), StampedAt: 12345}
		copy(s.Device[:], fmt.Sprintf("eth%d", i))
		if err := m.PutTuple(s); err != nil {
			t.Fatal(err)
		}
	}

	check := func(from int) int {
		t.Helper()
		b.Reset()
		n := 0
		for _, k := range keys[from:] {
			if b.Add(k.netns, k.local, k.remote) < 0 {
				break
			}
			n++
		}
		if b.Len() != n {
			t.Fatalf("Len %d, added %d", b.Len(), n)
		}
		if err := b.Lookup(); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			k := keys[from+i]
			want, wantOK, err := m.LookupTuple(k.netns, k.local, k.remote)
			if err != nil {
				t.Fatal(err)
			}
			var got Stamp
			ok := b.Stamp(i, &got)
			if ok != wantOK || got != want {
				t.Errorf("key %d %v: batch %v %+v, LookupTuple %v %+v", from+i, k, ok, got, wantOK, want)
			}
		}
		return n
	}
	if n := check(0); n != TupleBatchSize {
		t.Fatalf("the batch took %d keys, want %d", n, TupleBatchSize)
	}
	if n := check(TupleBatchSize); n != 10 {
		t.Fatalf("the second batch took %d keys, want 10", n)
	}
	var s Stamp
	if b.Stamp(10, &s) || b.Stamp(-1, &s) {
		t.Error("Stamp answered for a slot beyond the batch")
	}

	allocs := testing.AllocsPerRun(10, func() {
		b.Reset()
		for _, k := range keys[:TupleBatchSize] {
			b.Add(k.netns, k.local, k.remote)
		}
		if err := b.Lookup(); err != nil {
			t.Fatal(err)
		}
		for i := range TupleBatchSize {
			b.Stamp(i, &s)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch", allocs)
	}
}

// TestTupleBatchProgram: against the loaded sock_ops program's map, and
// through the read-only pins another process opens (the ingest helper of
// the e2e tests), a batch finds the stamp of an accepted connection exactly
// as LookupTuple does.
func TestTupleBatchProgram(t *testing.T) {
	testenv.RequireRoot(t)
	cg, err := ProcessCgroup()
	if err != nil {
		testenv.Skip(t, err.Error())
	}
	dir := pinDir(t)
	p, err := Load(Config{Cgroup: cg, PinDir: dir, Tuples: true}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
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
	local := server.LocalAddr().(*net.TCPAddr).AddrPort()
	remote := server.RemoteAddr().(*net.TCPAddr).AddrPort()
	netns, err := NetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	for name, m := range map[string]*Maps{"program": p.Maps(), "read-only pins": pinned} {
		want, ok, err := m.LookupTuple(netns, local, remote)
		if err != nil || !ok {
			t.Fatalf("%s: LookupTuple = %v, %v", name, ok, err)
		}
		b, err := m.NewTupleBatch()
		if err != nil {
			t.Fatalf("%s: NewTupleBatch: %v", name, err)
		}
		defer b.Close()
		i := b.Add(netns, local, remote)
		j := b.Add(netns+1, local, remote)
		if err := b.Lookup(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got Stamp
		if !b.Stamp(i, &got) || got != want {
			t.Errorf("%s: batch found %+v, LookupTuple %+v", name, got, want)
		}
		if b.Stamp(j, &got) {
			t.Errorf("%s: batch found the 4-tuple in another network namespace", name)
		}
	}
}

// TestTupleBatchClosed: a closed batch takes no key and looks nothing up.
func TestTupleBatchClosed(t *testing.T) {
	m, err := NewTupleMaps(1024)
	if err != nil {
		testenv.Skip(t, "creating a BPF map (needs CAP_BPF): "+err.Error())
	}
	defer m.Close()
	b, err := m.NewTupleBatch()
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort("192.0.2.1:80")
	if b.Add(1, ap, ap) != 0 {
		t.Fatal("Add to a new batch")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	var s Stamp
	if b.Add(1, ap, ap) != -1 || b.Lookup() != nil || b.Stamp(0, &s) || b.Close() != nil {
		t.Error("a closed batch took a key or answered")
	}
}
