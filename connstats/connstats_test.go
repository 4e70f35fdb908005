package connstats

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/loader"
)

// conns returns (total, active) per "tag vip".
func conns(t *testing.T, c *collector.Collector) map[string][2]uint64 {
	t.Helper()
	out := map[string][2]uint64{}
	total, active := fixtures.Connections(c.Snapshot(collector.Filter{}))
	for k := range total {
		out[k] = [2]uint64{total[k], uint64(active[k])}
	}
	return out
}

func TestTracker(t *testing.T) {
	col, err := collector.New(collector.Config{}, collector.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tags := bindings.NewResolver(bindings.Spec{DefaultTag: "direct", Bindings: []bindings.Binding{{Device: "tun0", Tag: "maglev"}}}, nil)
	tags.SetLinks([]bindings.Link{{Index: 5, Name: "tun0"}, {Index: 2, Name: "eth0"}})
	names := map[uint32]string{1: "maglev", 2: "direct"}
	vip4, vip6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	maglev4 := loader.ConnKey{VIP: vip4, TagID: 1, Family: bindings.FamilyIPv4, Bound: true}
	maglev6 := loader.ConnKey{VIP: vip6, TagID: 1, Family: bindings.FamilyIPv6, Bound: true}
	direct4 := loader.ConnKey{VIP: vip4, TagID: 2, Family: bindings.FamilyIPv4}
	untagged := loader.ConnKey{VIP: vip6, Ifindex: 5, Family: bindings.FamilyIPv6} // tag id 0: resolved by ifindex
	kernel := map[loader.ConnKey][2]uint64{}
	read := func() ([]loader.ConnCount, error) {
		var out []loader.ConnCount
		for k, v := range kernel {
			out = append(out, loader.ConnCount{Key: k, Opened: v[0], Closed: v[1]})
		}
		return out, nil
	}
	tr := New(col, tags, func(id uint32) (string, bool) { n, ok := names[id]; return n, ok }, read)

	// What the pinned map held when the agent started is counted at once.
	kernel[maglev4] = [2]uint64{10, 8}
	kernel[direct4] = [2]uint64{3, 3}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]uint64{"maglev 192.0.2.10": {10, 2}, "direct 192.0.2.10": {3, 0}}
	if got := conns(t, col); !maps.Equal(got, want) {
		t.Errorf("first sync: %v, want %v", got, want)
	}
	v4, _ := tags.Misses()
	if v4 != 3 {
		t.Errorf("ipv4 misses %d, want 3 (the direct connections)", v4)
	}

	// Later syncs add what changed. The untagged series resolves its
	// ifindex once; a binding changed later does not move it (its closes
	// land where its opens did).
	kernel[maglev4] = [2]uint64{12, 12}
	kernel[maglev6] = [2]uint64{1, 0}
	kernel[untagged] = [2]uint64{2, 0}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	tags.SetSpec(bindings.Spec{DefaultTag: "direct"})
	kernel[untagged] = [2]uint64{2, 2}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	want = map[string][2]uint64{"maglev 192.0.2.10": {12, 0}, "direct 192.0.2.10": {3, 0}, "maglev 2001:db8::10": {3, 1}}
	if got := conns(t, col); !maps.Equal(got, want) {
		t.Errorf("later syncs: %v, want %v", got, want)
	}
}

// TestTrackerOverflowPerConnection: past the series cap, every connection
// the kernel counted for a new (tag, VIP) is one fold in
// ipng_series_overflow_total (docs/metrics.md), not one per kernel series.
func TestTrackerOverflowPerConnection(t *testing.T) {
	col, err := collector.New(collector.Config{MaxSeries: 1}, collector.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tags := bindings.NewResolver(bindings.Spec{DefaultTag: "direct"}, nil)
	first := loader.ConnKey{VIP: netip.MustParseAddr("192.0.2.10"), TagID: 1, Family: bindings.FamilyIPv4}
	second := loader.ConnKey{VIP: netip.MustParseAddr("192.0.2.11"), TagID: 1, Family: bindings.FamilyIPv4}
	kernel := map[loader.ConnKey][2]uint64{first: {2, 0}}
	read := func() ([]loader.ConnCount, error) {
		var out []loader.ConnCount
		for k, v := range kernel {
			out = append(out, loader.ConnCount{Key: k, Opened: v[0], Closed: v[1]})
		}
		return out, nil
	}
	tr := New(col, tags, func(uint32) (string, bool) { return "maglev", true }, read)
	if err := tr.Sync(); err != nil { // first takes the only series
		t.Fatal(err)
	}
	kernel[second] = [2]uint64{3, 1}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	kernel[second] = [2]uint64{5, 5}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := col.Snapshot(collector.Filter{}).Meta.SeriesOverflow; got != 5 {
		t.Errorf("series overflow %d, want 5 (one per connection folded)", got)
	}
}
