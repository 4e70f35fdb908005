package collector

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func TestClassOf(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{-1, "unknown"}, {0, "unknown"}, {99, "unknown"}, {100, "1xx"}, {199, "1xx"},
		{200, "2xx"}, {299, "2xx"}, {300, "3xx"}, {404, "4xx"}, {499, "4xx"},
		{500, "5xx"}, {599, "5xx"}, {600, "unknown"}, {999, "unknown"}, {1 << 40, "unknown"},
	}
	for _, tc := range tests {
		if got := className(classOf(tc.status)); got != tc.want {
			t.Errorf("classOf(%d) = %s, want %s", tc.status, got, tc.want)
		}
	}
}

func TestValidSourceTag(t *testing.T) {
	tests := []struct {
		tag  string
		want bool
	}{
		{"maglev1", true}, {"direct", true}, {"a", true}, {"A9_.:-x", true},
		{strings.Repeat("a", 63), true}, {strings.Repeat("a", 64), false},
		{"", false}, {"-x", false}, {"_x", false}, {"a b", false}, {"a/b", false}, {"é", false},
	}
	for _, tc := range tests {
		if got := ValidSourceTag(tc.tag); got != tc.want {
			t.Errorf("ValidSourceTag(%q) = %v, want %v", tc.tag, got, tc.want)
		}
	}
}

func TestSeriesResolution(t *testing.T) {
	c, _ := newTestCollector(t, Config{})
	tests := []struct {
		name     string
		tag      string
		vip      netip.Addr
		wantTag  string
		wantVIP  string
		rejected string
	}{
		{"ipv4", "maglev1", netip.MustParseAddr("192.0.2.1"), "maglev1", "192.0.2.1", ""},
		{"v4-mapped is ipv4", "maglev1", netip.MustParseAddr("::ffff:192.0.2.1"), "maglev1", "192.0.2.1", ""},
		{"ipv6 compressed", "direct", netip.MustParseAddr("2001:0db8:0:0:0:0:0:0001"), "direct", "2001:db8::1", ""},
		{"zone dropped", "direct", netip.MustParseAddr("fe80::1%eth0"), "direct", "fe80::1", ""},
		{"invalid vip", "direct", netip.Addr{}, "", "", RejectInvalidVIP},
		{"invalid tag", "bad tag", netip.MustParseAddr("192.0.2.1"), "", "", RejectInvalidSourceTag},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := c.Series(tc.tag, tc.vip)
			if s.SourceTag() != tc.wantTag || s.VIP() != tc.wantVIP {
				t.Errorf("got (%q, %q), want (%q, %q)", s.SourceTag(), s.VIP(), tc.wantTag, tc.wantVIP)
			}
			before := c.Snapshot(Filter{}).Meta.OutcomesRejected[tc.rejected]
			s.Record(Outcome{Status: 200})
			s.ConnOpened() // must be a no-op on rejecting handles
			after := c.Snapshot(Filter{}).Meta.OutcomesRejected[tc.rejected]
			if tc.rejected != "" && after != before+1 {
				t.Errorf("rejected[%s] went %d → %d, want +1", tc.rejected, before, after)
			}
		})
	}
	var zero Series
	zero.Record(Outcome{Status: 200}) // must not panic
	zero.ConnOpened()
	zero.AddReading(1)
}

func TestSnapshotValues(t *testing.T) {
	c, _ := newTestCollector(t, Config{})
	populate(c)
	snap := c.Snapshot(Filter{SourceTags: []string{"maglev1"}})
	if len(snap.Series) != 1 {
		t.Fatalf("got %d series, want 1", len(snap.Series))
	}
	s := snap.Series[0]
	wantCodes := []CodeCounts{
		{Code: "1xx", Requests: 1, RequestBytes: 200, DurationSeconds: 1},
		{Code: "2xx", Requests: 2, RequestBytes: 200, ResponseBytes: 1590, DurationSeconds: 0.0027},
		{Code: "4xx", Requests: 1, RequestBytes: 95, ResponseBytes: 512, DurationSeconds: 0.04},
		{Code: "5xx", Requests: 1, RequestBytes: 2000, ResponseBytes: 20_000_000, DurationSeconds: 12},
		{Code: "unknown", Requests: 1},
	}
	if len(s.Codes) != len(wantCodes) {
		t.Fatalf("codes = %+v", s.Codes)
	}
	for i, w := range wantCodes {
		if s.Codes[i] != w {
			t.Errorf("codes[%d] = %+v, want %+v", i, s.Codes[i], w)
		}
	}
	if s.Duration.Count != 6 || s.Duration.Cumulative[0] != 2 || s.Duration.Cumulative[12] != 5 {
		t.Errorf("duration histogram = %+v", s.Duration)
	}
	if s.Connections == nil || s.Connections.Total != 2 || s.Connections.Active != 1 {
		t.Errorf("connections = %+v", s.Connections)
	}
	if s.InFlight != nil {
		t.Errorf("in-flight = %+v, want nil (never reported)", s.InFlight)
	}
	m := snap.Meta
	if m.Series != 2 || m.SeriesLimit != DefaultMaxSeries || m.AttributionFallbacks["no_stamp"] != 3 ||
		m.OutcomesRejected["parse_error"] != 1 || m.IfindexMisses["ipv4"] != 3 || m.BPFEvents["stamped"] != 42 {
		t.Errorf("meta = %+v", m)
	}
}

func TestReloadKeepsCounters(t *testing.T) {
	var logs bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	c, err := New(Config{MaxSeries: 10}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	populate(c)
	before := c.Snapshot(Filter{})
	if err := c.SetConfig(Config{MaxSeries: 1, DurationBuckets: []float64{1, 2}, NativeHistograms: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetConfig(Config{DurationBuckets: []float64{2, 1}}); err == nil {
		t.Error("SetConfig accepted decreasing buckets")
	}
	after := c.Snapshot(Filter{})
	if len(after.Series) != len(before.Series) {
		t.Fatalf("series %d → %d after reload", len(before.Series), len(after.Series))
	}
	for i := range before.Series {
		b, a := before.Series[i], after.Series[i]
		if len(a.Codes) != len(b.Codes) || a.Duration.Count != b.Duration.Count || len(a.Duration.Bounds) != len(b.Duration.Bounds) {
			t.Errorf("series %d changed on reload: %+v → %+v", i, b, a)
		}
	}
	if after.Meta.SeriesLimit != 1 {
		t.Errorf("series limit = %d, want 1", after.Meta.SeriesLimit)
	}
	if !strings.Contains(logs.String(), "duration buckets, native histograms") || !strings.Contains(logs.String(), "component=collector") {
		t.Errorf("warning not logged: %s", logs.String())
	}
	// Existing series still record; new ones fold into the overflow series.
	c.Series("maglev1", netip.MustParseAddr("192.0.2.10")).Record(Outcome{Status: 200})
	if s := c.Series("maglev1", netip.MustParseAddr("192.0.2.99")); s.VIP() != OverflowVIP {
		t.Errorf("new series after lowering the cap got vip %q", s.VIP())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults", Config{}, ""},
		{"negative cap", Config{MaxSeries: -1}, "max series"},
		{"too many shards", Config{Shards: 65}, "shards"},
		{"empty buckets", Config{DurationBuckets: []float64{}}, "at least one bound"},
		{"unsorted", Config{RequestSizeBuckets: []float64{10, 5}}, "strictly increasing"},
		{"negative bound", Config{ResponseSizeBuckets: []float64{-1}}, "not negative"},
		{"too many", Config{DurationBuckets: make([]float64, 65)}, "at most 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestRates(t *testing.T) {
	c, clk := newTestCollector(t, Config{})
	s := c.Series("maglev1", netip.MustParseAddr("192.0.2.1"))
	// 10 requests per second for 15 minutes.
	for range 180 {
		for range 50 {
			s.Record(Outcome{Status: 200})
		}
		clk.advance(RateInterval)
		c.Tick()
	}
	r := c.Snapshot(Filter{}).Series[0].Rate
	if r.M1 < 9.99 || r.M1 > 10.01 || r.M5 < 9.5 || r.M5 > 10 || r.M15 < 6 || r.M15 > 6.5 {
		t.Errorf("rates after 15 min at 10/s = %+v", r)
	}
	// Then silence for 5 minutes: m1 decays to almost nothing.
	for range 60 {
		clk.advance(RateInterval)
		c.Tick()
	}
	r = c.Snapshot(Filter{}).Series[0].Rate
	if r.M1 > 0.1 || r.M5 < 3 || r.M15 < r.M5 {
		t.Errorf("rates after 5 min idle = %+v", r)
	}
}

func TestReasonsBounded(t *testing.T) {
	c, _ := newTestCollector(t, Config{})
	for i := range 1000 {
		c.RejectOutcome(strings.Repeat("x", i%200) + string(rune('a'+i%26)))
	}
	c.RejectOutcome("\xff\xfe")
	rej := c.Snapshot(Filter{}).Meta.OutcomesRejected
	if len(rej) > maxReasons+1 {
		t.Errorf("%d reasons kept, want at most %d", len(rej), maxReasons+1)
	}
	var total uint64
	for r, n := range rej {
		total += n
		if len(r) > 64 {
			t.Errorf("reason %q longer than 64 bytes", r)
		}
	}
	if total != 1001 {
		t.Errorf("total rejections %d, want 1001", total)
	}
}

func TestNativeHistograms(t *testing.T) {
	c, _ := newTestCollector(t, Config{NativeHistograms: true})
	populate(c)
	var dur *dto.MetricFamily
	for _, mf := range c.Snapshot(Filter{SourceTags: []string{"maglev1"}}).MetricFamilies() {
		if mf.GetName() == metricDurationHist {
			dur = mf
		}
	}
	if dur == nil || len(dur.Metric) != 1 {
		t.Fatalf("duration family = %v", dur)
	}
	h := dur.Metric[0].GetHistogram()
	if h.GetSchema() != 3 || len(h.GetPositiveSpan()) == 0 || h.GetZeroCount() != 1 {
		t.Errorf("native part missing: schema %d spans %v zero %d", h.GetSchema(), h.GetPositiveSpan(), h.GetZeroCount())
	}
	if h.GetSampleCount() != 6 || len(h.GetBucket()) != len(DefaultDurationBuckets()) || h.GetBucket()[0].GetCumulativeCount() != 2 {
		t.Errorf("classic part wrong: %v", h)
	}
}

func TestInitialReasons(t *testing.T) {
	c, err := New(Config{}, Options{RejectReasons: []string{"parse_error"}, FallbackReasons: []string{"no_stamp", "unbound"}})
	if err != nil {
		t.Fatal(err)
	}
	m := c.Snapshot(Filter{}).Meta
	for _, r := range []string{RejectInvalidSourceTag, RejectInvalidVIP, "parse_error"} {
		if v, ok := m.OutcomesRejected[r]; !ok || v != 0 {
			t.Errorf("rejected[%s] = %d, %v; want present at 0", r, v, ok)
		}
	}
	if len(m.AttributionFallbacks) != 2 {
		t.Errorf("fallbacks = %v, want no_stamp and unbound at 0", m.AttributionFallbacks)
	}
}

// TestSnapshotWaitsForBatch: a snapshot taken during a batch waits for its
// end and then sees the whole batch, never a part of it. (Records do not
// wait.)
func TestSnapshotWaitsForBatch(t *testing.T) {
	c, err := New(Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("192.0.2.1")
	s := c.Series("maglev", vip)
	c.BeginBatch()
	s.Record(Outcome{Status: 200})
	got := make(chan uint64, 1)
	go func() {
		var n uint64
		for _, ss := range c.Snapshot(Filter{}).Series {
			for _, cc := range ss.Codes {
				n += cc.Requests
			}
		}
		got <- n
	}()
	select {
	case n := <-got:
		t.Fatalf("a snapshot during a batch returned (%d requests) before the batch ended", n)
	case <-time.After(200 * time.Millisecond): // a negative check: a snapshot returns in microseconds
	}
	s.Record(Outcome{Status: 200})
	c.EndBatch()
	if n := <-got; n != 2 {
		t.Errorf("snapshot after the batch: %d requests, want 2", n)
	}
}
