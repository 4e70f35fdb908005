package connstats

import (
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/loader"
)

const ownNetns = 7

// stamp makes a stamp; its StampedAt is its cookie in seconds.
func stamp(cookie uint64, ifindex uint32, vip string, netns uint64) loader.Stamp {
	return loader.Stamp{Cookie: cookie, NetnsCookie: netns, Ifindex: ifindex, Family: bindings.FamilyIPv4,
		Local: netip.AddrPortFrom(netip.MustParseAddr(vip), 80), StampedAt: time.Duration(cookie) * time.Second}
}

// conns returns (total, active) per "tag vip".
func conns(t *testing.T, c *collector.Collector) map[string][2]uint64 {
	t.Helper()
	out := map[string][2]uint64{}
	for _, s := range c.Snapshot(collector.Filter{}).Series {
		if s.Connections != nil {
			out[s.SourceTag+" "+s.VIP] = [2]uint64{s.Connections.Total, uint64(s.Connections.Active)}
		}
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
	tr := New(col, tags, ownNetns)

	// Two connections were open before the agent started.
	tr.Seed([]loader.Stamp{stamp(1, 5, "192.0.2.10", ownNetns), stamp(2, 2, "192.0.2.10", ownNetns), stamp(3, 5, "192.0.2.10", 99)})
	tr.Handle(loader.Event{Open: true, Stamp: stamp(1, 5, "192.0.2.10", ownNetns)}) // its event arrives late: not twice
	tr.Handle(loader.Event{Open: true, Stamp: stamp(4, 5, "::ffff:192.0.2.10", ownNetns)})
	tr.Handle(loader.Event{Open: true, Stamp: stamp(5, 5, "2001:db8::10", ownNetns)})
	tr.Handle(loader.Event{Open: true, Stamp: stamp(6, 5, "192.0.2.10", 99)}) // another namespace

	// The binding changes: the close still lands in the series of the open.
	tags.SetSpec(bindings.Spec{DefaultTag: "direct"})
	tr.Handle(loader.Event{Open: false, Stamp: stamp(4, 5, "192.0.2.10", ownNetns)})
	tr.Handle(loader.Event{Open: false, Stamp: stamp(42, 5, "192.0.2.10", ownNetns)}) // unknown: ignored

	want := map[string][2]uint64{
		"maglev 192.0.2.10":   {2, 1},
		"maglev 2001:db8::10": {1, 1},
		"direct 192.0.2.10":   {1, 1},
	}
	if got := conns(t, col); !maps.Equal(got, want) {
		t.Errorf("after events: %v, want %v", got, want)
	}
	if tr.Open() != 3 || tr.OtherNetns() != 1 {
		t.Errorf("Open() = %d, OtherNetns() = %d; want 3, 1", tr.Open(), tr.OtherNetns())
	}

	// A connection opens after the listing for Reconcile was taken: it is
	// not in the listing, but must not be closed.
	listing := []loader.Stamp{stamp(1, 5, "192.0.2.10", ownNetns)}
	snapshotAt := 6 * time.Second
	tr.Handle(loader.Event{Open: true, Stamp: stamp(7, 2, "2001:db8::10", ownNetns)})
	// Close events were lost for 2 and 5: Reconcile closes them.
	if n := tr.Reconcile(listing, snapshotAt); n != 2 {
		t.Errorf("Reconcile closed %d, want 2", n)
	}
	want = map[string][2]uint64{
		"maglev 192.0.2.10":   {2, 1},
		"maglev 2001:db8::10": {1, 0},
		"direct 192.0.2.10":   {1, 0},
		"direct 2001:db8::10": {1, 1},
	}
	if got := conns(t, col); !maps.Equal(got, want) {
		t.Errorf("after Reconcile: %v, want %v", got, want)
	}
}
