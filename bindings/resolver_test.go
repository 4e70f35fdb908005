package bindings

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestResolverCanonical does 10 lookups per (device, family) on every link
// plus an unknown ifindex and ifindex 0, and checks the per-tag counts and
// the miss counters exactly.
func TestResolverCanonical(t *testing.T) {
	for _, layout := range []struct {
		name string
		off  uint32
	}{{"dense", 0}, {"sparse", 1 << 20}} {
		t.Run(layout.name, func(t *testing.T) {
			r := NewResolver(canonicalSpec(), discardLogger())
			links := offsetLinks(canonicalLinks(), layout.off)
			r.SetLinks(links)
			indexes := []uint32{0, layout.off + 99} // ifindex 0 and unknown
			for _, l := range links {
				indexes = append(indexes, l.Index)
			}
			counts := map[string]int{}
			devices := map[string]int{}
			for _, idx := range indexes {
				for _, fam := range []Family{FamilyIPv4, FamilyIPv6} {
					for range 10 {
						res := r.Lookup(idx, fam)
						counts[res.Tag]++
						devices[res.Device]++
					}
				}
			}
			wantCounts := map[string]int{"tag1": 20, "tag2-v4": 10, "tag2-v6": 10, "direct": 100}
			if !mapsEqual(counts, wantCounts) {
				t.Errorf("tag counts = %v, want %v", counts, wantCounts)
			}
			// lo, eth0, eth3 have a device name but no binding; 0 and 99 have none.
			wantDevices := map[string]int{"": 40, "lo": 20, "eth0": 20, "eth1": 20, "eth2": 20, "eth3": 20}
			if !mapsEqual(devices, wantDevices) {
				t.Errorf("device counts = %v, want %v", devices, wantDevices)
			}
			v4, v6 := r.Misses()
			if v4 != 50 || v6 != 50 {
				t.Errorf("Misses() = %d, %d, want 50, 50", v4, v6)
			}
		})
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestResolverStartsEmpty(t *testing.T) {
	r := NewResolver(canonicalSpec(), nil) // nil logger: slog.Default()
	if got := r.Lookup(3, FamilyIPv4); got != (Result{Tag: "direct"}) {
		t.Errorf("before any scan: %+v", got)
	}
	if v4, v6 := r.Misses(); v4 != 1 || v6 != 0 {
		t.Errorf("Misses() = %d, %d, want 1, 0", v4, v6)
	}
	for _, bd := range r.Table().Bound() {
		if bd.Present {
			t.Errorf("before any scan %s is present", bd.Binding.Device)
		}
	}
}

func TestResolverMissesNotCountedForOtherFamilies(t *testing.T) {
	r := NewResolver(canonicalSpec(), discardLogger())
	r.SetLinks(canonicalLinks())
	r.Lookup(2, FamilyAny)
	r.Lookup(2, Family(9))
	if v4, v6 := r.Misses(); v4 != 0 || v6 != 0 {
		t.Errorf("Misses() = %d, %d, want 0, 0", v4, v6)
	}
}

func TestResolverSetSpecKeepsCountersAndLinks(t *testing.T) {
	r := NewResolver(canonicalSpec(), discardLogger())
	r.SetLinks(canonicalLinks())
	r.Lookup(2, FamilyIPv4) // eth0: miss
	r.Lookup(3, FamilyIPv6) // eth1: hit
	r.SetSpec(Spec{DefaultTag: "plain", Bindings: []Binding{{Device: "eth0", Tag: "zero"}}})
	tests := []struct {
		index uint32
		fam   Family
		want  Result
	}{
		{2, FamilyIPv4, Result{"zero", "eth0", true}},
		{3, FamilyIPv6, Result{"plain", "eth1", false}},
		{4, FamilyIPv4, Result{"plain", "eth2", false}},
	}
	for _, tt := range tests {
		if got := r.Lookup(tt.index, tt.fam); got != tt.want {
			t.Errorf("Lookup(%d, %s) = %+v, want %+v", tt.index, tt.fam, got, tt.want)
		}
	}
	if v4, v6 := r.Misses(); v4 != 2 || v6 != 1 {
		t.Errorf("Misses() = %d, %d, want 2, 1", v4, v6)
	}
}

func TestResolverApplyChanges(t *testing.T) {
	spec := Spec{DefaultTag: "direct", Bindings: []Binding{{Device: "tun0", Tag: "t"}}}
	tests := []struct {
		name    string
		changes []linkChange
		rebuilt bool
		want    map[uint32]Result
	}{
		{"no-op update", []linkChange{{5, "tun0"}}, false, map[uint32]Result{5: {"t", "tun0", true}}},
		{"ignored index 0", []linkChange{{0, "tun0"}}, false, map[uint32]Result{5: {"t", "tun0", true}}},
		{"delete unknown", []linkChange{{77, ""}}, false, map[uint32]Result{5: {"t", "tun0", true}}},
		{"delete", []linkChange{{5, ""}}, true, map[uint32]Result{5: {"direct", "", false}}},
		{"delete and re-create", []linkChange{{5, ""}, {9, "tun0"}}, true,
			map[uint32]Result{5: {"direct", "", false}, 9: {"t", "tun0", true}}},
		{"rename away", []linkChange{{5, "tunX"}}, true, map[uint32]Result{5: {"direct", "tunX", false}}},
		{"rename onto", []linkChange{{5, "old"}, {6, "tun0"}}, true,
			map[uint32]Result{5: {"direct", "old", false}, 6: {"t", "tun0", true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResolver(spec, discardLogger())
			r.SetLinks([]Link{{1, "lo"}, {5, "tun0"}})
			changed, before := r.Changed(), r.Table()
			if got := r.applyChanges(tt.changes); got != tt.rebuilt {
				t.Errorf("applyChanges rebuilt = %v, want %v", got, tt.rebuilt)
			}
			// A follower waiting on Changed wakes exactly when the
			// table was replaced.
			select {
			case <-changed:
				if !tt.rebuilt || r.Table() == before {
					t.Errorf("Changed closed, rebuilt %v, table replaced %v", tt.rebuilt, r.Table() != before)
				}
			default:
				if tt.rebuilt {
					t.Error("table rebuilt, Changed not closed")
				}
			}
			for idx, want := range tt.want {
				if got := r.Table().Lookup(idx, FamilyIPv4); got != want {
					t.Errorf("Lookup(%d) = %+v, want %+v", idx, got, want)
				}
			}
		})
	}
}

func TestResolverLogsChanges(t *testing.T) {
	var buf bytes.Buffer
	r := NewResolver(Spec{DefaultTag: "direct", Bindings: []Binding{
		{Device: "tun0", Tag: "t0"}, {Device: "tun1"},
	}}, slog.New(slog.NewTextHandler(&buf, nil)))
	steps := []struct {
		name string
		do   func()
		want []string
		not  []string
	}{
		{"first table announces all", func() { r.SetLinks([]Link{{1, "lo"}, {5, "tun0"}}) },
			[]string{`msg="device bound" component=bindings device=tun0 family=any ifindex=5 tag=t0`,
				`msg="device absent" component=bindings device=tun1`}, nil},
		{"unrelated change is quiet", func() { r.applyChanges([]linkChange{{2, "eth0"}}) },
			nil, []string{"device"}},
		{"gone", func() { r.applyChanges([]linkChange{{5, ""}}) },
			[]string{`msg="device gone" component=bindings device=tun0 family=any ifindex=5 tag=t0`}, nil},
		{"re-created", func() { r.applyChanges([]linkChange{{8, "tun0"}}) },
			[]string{`msg="device bound" component=bindings device=tun0 family=any ifindex=8 tag=t0`}, nil},
		{"spec change", func() { r.SetSpec(Spec{DefaultTag: "direct", Bindings: []Binding{{Device: "tun0", Tag: "new"}}}) },
			[]string{`msg="device bound" component=bindings device=tun0 family=any ifindex=8 tag=new`}, nil},
		{"binding removed", func() { r.SetSpec(Spec{DefaultTag: "direct"}) },
			[]string{`msg="device unbound" component=bindings device=tun0 family=any ifindex=8 tag=new`}, nil},
	}
	for _, st := range steps {
		buf.Reset()
		st.do()
		out := buf.String()
		for _, w := range st.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: log lacks %q:\n%s", st.name, w, out)
			}
		}
		for _, n := range st.not {
			if strings.Contains(out, n) {
				t.Errorf("%s: log has %q:\n%s", st.name, n, out)
			}
		}
	}
}

func TestLookupAllocs(t *testing.T) {
	r := NewResolver(canonicalSpec(), discardLogger())
	r.SetLinks(canonicalLinks())
	sparse := NewResolver(canonicalSpec(), discardLogger())
	sparse.SetLinks(offsetLinks(canonicalLinks(), 1<<20))
	tests := []struct {
		name string
		fn   func()
	}{
		{"resolver hit", func() { r.Lookup(3, FamilyIPv4) }},
		{"resolver family hit", func() { r.Lookup(4, FamilyIPv6) }},
		{"resolver miss", func() { r.Lookup(2, FamilyIPv6) }},
		{"resolver unknown", func() { r.Lookup(12345, FamilyIPv4) }},
		{"resolver zero", func() { r.Lookup(0, FamilyIPv4) }},
		{"resolver sparse hit", func() { sparse.Lookup(3+1<<20, FamilyIPv4) }},
		{"resolver sparse unknown", func() { sparse.Lookup(7, FamilyIPv4) }},
		{"table hit", func() { r.Table().Lookup(3, FamilyIPv4) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tt.fn); n != 0 {
				t.Errorf("allocs per Lookup = %v, want 0", n)
			}
		})
	}
}

// TestConcurrentLookup races lookups against SetLinks and SetSpec (run with
// -race). Every result must be one a consistent table could give, and the
// miss counters must equal the misses the readers saw.
func TestConcurrentLookup(t *testing.T) {
	specA := canonicalSpec()
	specB := Spec{DefaultTag: "direct", Bindings: []Binding{{Device: "eth3", Tag: "tag3"}}}
	linksA := canonicalLinks()
	linksB := []Link{{1, "lo"}, {3, "eth2"}, {4, "eth1"}, {5, "eth3"}, {9, "eth0"}}
	valid := map[Result]bool{}
	for _, s := range []Spec{specA, specB} {
		for _, ls := range [][]Link{linksA, linksB} {
			tab := NewTable(s, ls)
			for idx := range uint32(11) {
				for _, fam := range []Family{FamilyIPv4, FamilyIPv6} {
					valid[tab.Lookup(idx, fam)] = true
				}
			}
		}
	}

	r := NewResolver(specA, discardLogger())
	r.SetLinks(linksA)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var seenV4, seenV6 atomic.Uint64
	var bad atomic.Value
	for g := range 8 {
		wg.Go(func() {
			var v4, v6 uint64
			for i := uint32(g); !stop.Load(); i++ {
				fam := FamilyIPv4
				if i%2 == 1 {
					fam = FamilyIPv6
				}
				res := r.Lookup(i%11, fam)
				if !valid[res] {
					bad.Store(res)
				}
				if !res.Bound {
					if fam == FamilyIPv4 {
						v4++
					} else {
						v6++
					}
				}
			}
			seenV4.Add(v4)
			seenV6.Add(v6)
		})
	}
	for i := range 2000 {
		switch i % 4 {
		case 0:
			r.SetLinks(linksB)
		case 1:
			r.SetSpec(specB)
		case 2:
			r.SetLinks(linksA)
		case 3:
			r.SetSpec(specA)
		}
		_ = r.Table().Bound()
	}
	stop.Store(true)
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Errorf("inconsistent result %+v", b)
	}
	v4, v6 := r.Misses()
	if v4 != seenV4.Load() || v6 != seenV6.Load() {
		t.Errorf("Misses() = %d, %d, readers saw %d, %d", v4, v6, seenV4.Load(), seenV6.Load())
	}
}
