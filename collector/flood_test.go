package collector

import (
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestCardinalityFlood sends 100k distinct VIPs into a collector capped at
// 1000 series: exactly 1000 series plus one overflow series must exist, the
// overflow counter must count every folded lookup, no request may be lost,
// and the heap must stop growing once the cap is reached.
func TestCardinalityFlood(t *testing.T) {
	const limit, flood = 1000, 100_000
	c, _ := newTestCollector(t, Config{MaxSeries: limit})
	vipN := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	}
	start := heapAlloc()
	for i := range limit {
		c.Series("maglev1", vipN(i)).Record(Outcome{Status: 200, ResponseBytes: 10})
	}
	atCap := heapAlloc()
	for i := limit; i < flood; i++ {
		s := c.Series("maglev1", vipN(i))
		if s.VIP() != OverflowVIP {
			t.Fatalf("VIP %d got its own series %q beyond the cap", i, s.VIP())
		}
		s.Record(Outcome{Status: 200, ResponseBytes: 10})
	}
	end := heapAlloc()

	snap := c.Snapshot(Filter{})
	if len(snap.Series) != limit+1 {
		t.Errorf("got %d series, want %d + 1 overflow", len(snap.Series), limit)
	}
	last := snap.Series[len(snap.Series)-1]
	if last.VIP != OverflowVIP || last.SourceTag != "maglev1" {
		t.Errorf("last series = (%s, %s), want (maglev1, other)", last.SourceTag, last.VIP)
	}
	if got, want := last.Codes[0].Requests, uint64(flood-limit); got != want {
		t.Errorf("overflow series has %d requests, want %d", got, want)
	}
	if snap.Meta.SeriesOverflow != flood-limit || snap.Meta.Series != limit {
		t.Errorf("meta series=%d overflow=%d, want %d and %d", snap.Meta.Series, snap.Meta.SeriesOverflow, limit, flood-limit)
	}
	perSeries := float64(int64(atCap)-int64(start)) / limit
	growth := int64(end) - int64(atCap)
	t.Logf("heap: %.0f bytes/series up to the cap; %+d bytes for %d more VIPs", perSeries, growth, flood-limit)
	if growth > 512<<10 {
		t.Errorf("heap grew by %d bytes after the cap was reached", growth)
	}
	if perSeries > 8<<10 {
		t.Errorf("%.0f bytes per series, want < 8 KiB", perSeries)
	}
}

// TestOverflowTagsBounded floods distinct tags: per-tag overflow series stop
// at maxOverflowTags and the rest folds into (other, other).
func TestOverflowTagsBounded(t *testing.T) {
	c, _ := newTestCollector(t, Config{MaxSeries: 1})
	vip := netip.MustParseAddr("192.0.2.1")
	for i := range 2 * maxOverflowTags {
		c.Series("t"+strconv.Itoa(i), vip).Record(Outcome{Status: 200})
	}
	snap := c.Snapshot(Filter{})
	if len(snap.Series) != 1+maxOverflowTags+1 {
		t.Errorf("got %d series, want 1 + %d + 1", len(snap.Series), maxOverflowTags)
	}
	other := c.Snapshot(Filter{SourceTags: []string{OverflowTag}, VIPs: []string{OverflowVIP}})
	if len(other.Series) != 1 || other.Series[0].Codes[0].Requests != maxOverflowTags-1 {
		t.Errorf("catch-all series = %+v", other.Series)
	}
}

// TestConcurrentRecordAndScrape records from many goroutines while others
// take snapshots, tick rates and reload; run it under -race. The final
// totals must be exact and every snapshot's histograms consistent.
func TestConcurrentRecordAndScrape(t *testing.T) {
	c, _ := newTestCollector(t, Config{MaxSeries: 50, NativeHistograms: true})
	const workers, perWorker = 8, 2000
	vips := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.2")}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				s := c.Series([]string{"maglev1", "direct"}[w%2], vips[(w+i)%len(vips)])
				s.ConnOpened()
				s.AddReading(1)
				s.AddReading(-1)
				s.Record(Outcome{Status: 100 + 100*(i%6), RequestBytes: uint64(i), ResponseBytes: uint64(i * 10), Duration: time.Duration(i) * time.Microsecond})
				s.ConnClosed()
				if i%500 == 0 {
					c.RejectOutcome("busy")
					runtime.Gosched()
				}
			}
		})
	}
	var scrapes sync.WaitGroup
	for range 2 {
		scrapes.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, s := range c.Snapshot(Filter{}).Series {
					for _, h := range []Histogram{s.Duration, s.RequestSize, s.ResponseSize} {
						for i := 1; i < len(h.Cumulative); i++ {
							if h.Cumulative[i] < h.Cumulative[i-1] || h.Cumulative[i] > h.Count {
								t.Errorf("inconsistent histogram %+v", h)
								return
							}
						}
					}
				}
				_ = c.Snapshot(Filter{VIPs: []string{"192.0.2.1"}}).MetricFamilies()
				c.Tick()
				_ = c.SetConfig(Config{MaxSeries: 50, NativeHistograms: true})
			}
		})
	}
	wg.Wait()
	close(stop)
	scrapes.Wait()

	var reqs, conns uint64
	var active, reading int64
	for _, s := range c.Snapshot(Filter{}).Series {
		for _, cc := range s.Codes {
			reqs += cc.Requests
		}
		conns += s.Connections.Total
		active += s.Connections.Active
		reading += s.InFlight.Reading
	}
	if reqs != workers*perWorker || conns != workers*perWorker || active != 0 || reading != 0 {
		t.Errorf("requests=%d connections=%d active=%d reading=%d, want %d, %d, 0, 0", reqs, conns, active, reading, workers*perWorker, workers*perWorker)
	}
}
