package tests

import (
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/loader"
)

// A path is a client namespace and the srv device its connections arrive on.
type path struct {
	name string
	ns   func(*topo.Topo) *topo.NS
	dev  string
}

var paths = []path{
	{"c1 via eth1", func(tp *topo.Topo) *topo.NS { return tp.C1 }, "eth1"},
	{"c2 via eth2", func(tp *topo.Topo) *topo.NS { return tp.C2 }, "eth2"},
	{"lb via the vxlan tunnel", func(tp *topo.Topo) *topo.NS { return tp.LB }, "tun0"},
	{"c4 via macvlan", func(tp *topo.Topo) *topo.NS { return tp.C4 }, "mv0"},
	{"cl via lb and the tunnel (DSR)", func(tp *topo.Topo) *topo.NS { return tp.Client }, "tun0"},
}

const connsPerCase = 10

// TestAttributionMatrix connects 10 times over every path with every family
// (IPv4, IPv6, v4-mapped) to a wildcard dual-stack server, in BPF mode (the
// agent's pinned maps) and in the IP_PKTINFO fallback, and checks every
// connection's device, ifindex, family and tag, and the exact totals per tag.
func TestAttributionMatrix(t *testing.T) {
	for _, mode := range []struct{ mode, method string }{{"bpf", "cookie"}, {"fallback", "pktinfo"}} {
		t.Run(mode.mode, func(t *testing.T) {
			e := newEnv(t, "")
			if mode.mode == "bpf" {
				e.startAgent()
			}
			e.startTagServer(mode.mode)

			got, want := map[string]int{}, map[string]int{}
			for _, p := range paths {
				ns := p.ns(e.topo)
				ifindex := e.topo.Srv.Ifindex(t, p.dev)
				for _, fam := range families {
					wantFam := map[string]string{"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4"}[fam]
					tag := expectedTag(p.dev, wantFam)
					for i := range connsPerCase {
						c, err := e.connect(ns, fam)
						if err != nil {
							t.Fatal(err)
						}
						r := c.reply
						if r.Device != p.dev || r.Ifindex != ifindex || r.Family != wantFam || r.Tag != tag || r.Method != mode.method {
							t.Errorf("%s %s #%d: got %+v, want device %s ifindex %d family %s tag %s method %s",
								p.name, fam, i, r, p.dev, ifindex, wantFam, tag, mode.method)
						}
						got[r.Tag]++
						want[tag]++
						c.conn.Close()
					}
				}
			}
			if !maps.Equal(got, want) {
				t.Errorf("connections per tag = %v, want %v", got, want)
			}
		})
	}
}

// TestCanonicalCounts is the original module's acceptance test: 10
// connections per (device, family) with eth1→tag1 for both families and eth2
// → tag2-v4/tag2-v6 count exactly tag1=20, tag2-v4=10, tag2-v6=10.
func TestCanonicalCounts(t *testing.T) {
	e := newEnv(t, "")
	e.startAgent()
	e.startTagServer("bpf")
	got := map[string]int{}
	for _, ns := range []*topo.NS{e.topo.C1, e.topo.C2} {
		for _, fam := range []string{"ipv4", "ipv6"} {
			for range connsPerCase {
				c, err := e.connect(ns, fam)
				if err != nil {
					t.Fatal(err)
				}
				got[c.reply.Tag]++
				c.conn.Close()
			}
		}
	}
	want := map[string]int{"tag1": 20, "tag2-v4": 10, "tag2-v6": 10}
	if !maps.Equal(got, want) {
		t.Errorf("connections per tag = %v, want %v", got, want)
	}
}

// connRow is one line of `ipng-stats conns -o json`.
type connRow struct {
	Local     string `json:"local"`
	Remote    string `json:"remote"`
	Family    string `json:"family"`
	Ifindex   uint32 `json:"ifindex"`
	Device    string `json:"device"`
	SourceTag string `json:"source_tag"`
	Bound     bool   `json:"bound"`
}

// TestConnsCommand holds one connection open per path and family and checks
// that `ipng-stats conns` lists each with the right device and tag.
func TestConnsCommand(t *testing.T) {
	// An idle nginx ingest: the program writes the 4-tuple map only for it.
	e, maps, netns := newPinnedEnv(t, fmt.Sprintf("nginx:\n  enabled: true\n  log_file: %s\n", filepath.Join(t.TempDir(), "access.log")))
	want := map[string]connRow{} // by client address
	for _, p := range paths {
		for _, fam := range families {
			c, err := e.connect(p.ns(e.topo), fam)
			if err != nil {
				t.Fatal(err)
			}
			wantFam := map[string]string{"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4"}[fam]
			local := c.conn.LocalAddr().String()
			want[normalize(local)] = connRow{Device: p.dev, SourceTag: expectedTag(p.dev, wantFam), Family: wantFam, Bound: p.dev != "mv0"}

			// The 4-tuple map, as a consumer that knows only addresses
			// (an access log line) sees it: the server's local address is
			// the client's remote one; IPv4 keys are the same whether the
			// client was v4-mapped or not.
			client := netip.MustParseAddrPort(normalize(local))
			vip := netip.MustParseAddrPort(normalize(c.conn.RemoteAddr().String()))
			st, ok, err := maps.LookupTuple(netns, vip, client)
			if err != nil || !ok || st.Ifindex != c.reply.Ifindex || st.Family.String() != wantFam {
				t.Errorf("%s %s: tuple lookup (%s, %s) = %+v, %v, %v; want ifindex %d family %s",
					p.name, fam, vip, client, st, ok, err, c.reply.Ifindex, wantFam)
			}
			if _, ok, _ := maps.LookupTuple(netns+1, vip, client); ok {
				t.Errorf("%s %s: tuple found under another netns cookie", p.name, fam)
			}
		}
	}
	// conns needs no capability: run it as nobody, a member of the pins'
	// group (the agent's, root's here).
	rows := e.conns(t, e.cfgPath, e.pinDir, asUser(65534, 65534, pinGroup(t, e.pinDir)))
	seen := map[string]bool{}
	for _, r := range rows {
		w, ok := want[r.Remote]
		if !ok {
			continue
		}
		seen[r.Remote] = true
		if r.Device != w.Device || r.SourceTag != w.SourceTag || r.Family != w.Family || r.Bound != w.Bound {
			t.Errorf("conns row for %s = %+v, want %+v", r.Remote, r, w)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("conns listed %d of %d open connections; missing %v\n%+v", len(seen), len(want),
			slices.Collect(func(yield func(string) bool) {
				for k := range want {
					if !seen[k] && !yield(k) {
						return
					}
				}
			}), rows)
	}

	// The table output, as an operator sees it, names device and tag.
	table, err := e.ipngStats("conns", "--config", e.cfgPath, "--bpf.pin-dir", e.pinDir)
	if err != nil {
		t.Fatalf("conns: %v\n%s", err, table)
	}
	for _, s := range []string{"SOURCE_TAG", "maglev", "tag2-v6", "mv0"} {
		if !strings.Contains(table, s) {
			t.Errorf("conns table lacks %q:\n%s", s, table)
		}
	}
}

// normalize turns a v4-mapped "[::ffff:a.b.c.d]:p" into "a.b.c.d:p", the
// form conns prints.
func normalize(addr string) string {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return addr
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// TestTupleMapOnlyWithNginx: without the nginx ingest (the default
// configuration) the program does not write the 4-tuple map, which only the
// ingest reads: a stamped connection is in socket storage, not there.
func TestTupleMapOnlyWithNginx(t *testing.T) {
	e, maps, netns := newPinnedEnv(t, "")
	c, err := e.connect(e.topo.C1, "ipv4")
	if err != nil {
		t.Fatal(err)
	}
	if c.reply.Ifindex == 0 {
		t.Fatalf("connection not stamped: %+v", c.reply)
	}
	client := netip.MustParseAddrPort(normalize(c.conn.LocalAddr().String()))
	vip := netip.MustParseAddrPort(normalize(c.conn.RemoteAddr().String()))
	if st, ok, err := maps.LookupTuple(netns, vip, client); ok || err != nil {
		t.Errorf("tuple lookup (%s, %s) = %+v, %v, %v; want no entry without the nginx ingest", vip, client, st, ok, err)
	}
}

// newPinnedEnv starts an agent on extra configuration and the BPF tag
// server, and opens the agent's pinned maps (closed at the test's end) with
// the server namespace's netns cookie, as a consumer of the pins sees them.
func newPinnedEnv(t *testing.T, extra string) (*env, *loader.Maps, uint64) {
	t.Helper()
	e := newEnv(t, extra)
	e.startAgent()
	e.startTagServer("bpf")
	maps, err := loader.OpenPinned(e.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { maps.Close() })
	var netns uint64
	if err := e.topo.Srv.Do(t, func() (err error) { netns, err = loader.NetnsCookie(); return err }); err != nil {
		t.Fatal(err)
	}
	return e, maps, netns
}
