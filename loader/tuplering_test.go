package loader

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestTupleHistory: with a ring of 1024 stamps, 2500 connections overwrite
// the first ones. The last 1024 are found, each with its own stamp; every
// one before is known to the ring of hashes as stamped (evicted), exactly;
// a 4-tuple that was never stamped is not.
func TestTupleHistory(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testCgroup(t)
	p, err := Load(Config{Cgroup: cg, PinDir: pinDir(t), Tuples: true, TupleMapEntries: 1024}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	m := p.Maps()
	hist, err := m.TupleHistory()
	if err != nil {
		t.Fatal(err)
	}
	if hist.Window() != 4096 {
		t.Errorf("window %d, want 4096 (4 × 1024)", hist.Window())
	}
	netns, err := NetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	port := startServer(t, cg)
	server := netip.MustParseAddrPort("127.0.0.1:" + strconv.Itoa(port))
	const conns = 2500
	var remotes []netip.AddrPort
	for range conns {
		c, err := net.DialTimeout("tcp4", server.String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		remotes = append(remotes, c.LocalAddr().(*net.TCPAddr).AddrPort())
		c.Close()
	}
	// The server side stamps when the handshake's last ACK arrives.
	var head uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if err := m.TupleHead.Lookup(uint32(0), &head); err != nil {
			t.Fatal(err)
		}
		if head == conns || time.Now().After(deadline) {
			break
		}
	}
	if head != conns {
		t.Fatalf("ring head %d, want %d stamps", head, conns)
	}
	stamps, err := m.NewTupleStamps()
	if err != nil {
		t.Fatal(err)
	}
	defer stamps.Close()
	if err := stamps.Sync(); err != nil {
		t.Fatal(err)
	}
	var inMap, evicted int
	for _, r := range remotes {
		var st Stamp
		found, err := stamps.Lookup(netns, server, r, &st)
		if err != nil {
			t.Fatal(err)
		}
		if found && st.Remote != r {
			t.Errorf("connection from %s: found the stamp of %s", r, st.Remote)
		}
		if found {
			inMap++
			continue
		}
		ok, err := hist.Stamped(netns, server, r)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("connection from %s: not in the map and not known as stamped", r)
			continue
		}
		evicted++
	}
	t.Logf("%d in the ring of stamps, %d evicted", inMap, evicted)
	if inMap != 1024 || evicted != conns-1024 {
		t.Errorf("%d in the ring of stamps, %d evicted; want the last 1024 found, the %d before evicted", inMap, evicted, conns-1024)
	}
	for _, r := range []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.2:40000")} {
		if ok, err := hist.Stamped(netns, server, r); ok || err != nil {
			t.Errorf("never stamped %s: Stamped = %v, %v", r, ok, err)
		}
	}
}

func TestTupleRingSize(t *testing.T) {
	for _, tt := range []struct{ entries, want uint32 }{
		{0, 1}, {1, 4}, {1024, 4096}, {1000, 4096}, {1025, 8192}, {262144, 1 << 20},
	} {
		if got := tupleRingSize(tt.entries); got != tt.want {
			t.Errorf("tupleRingSize(%d) = %d, want %d", tt.entries, got, tt.want)
		}
	}
}
