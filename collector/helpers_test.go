package collector

import (
	"bytes"
	"flag"
	"net/netip"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// fakeClock is a settable clock for Options.Now.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time          { return f.t }
func (f *fakeClock) advance(d time.Duration) { f.t = f.t.Add(d) }

func newTestCollector(t testing.TB, cfg Config) (*Collector, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	c, err := New(cfg, Options{Build: BuildInfo{Version: "1.2.3", Revision: "abc123", GoVersion: "go1.26"}, Now: clk.now})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, clk
}

// populate records a fixed set of outcomes that exercises every family.
func populate(c *Collector) {
	v4 := netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8::80")
	s := c.Series("maglev1", v4)
	s.ConnOpened()
	s.ConnOpened()
	s.ConnClosed()
	s.Record(Outcome{Status: 200, RequestBytes: 80, ResponseBytes: 1500, Duration: 2 * time.Millisecond})
	s.Record(Outcome{Status: 204, RequestBytes: 120, ResponseBytes: 90, Duration: 700 * time.Microsecond})
	s.Record(Outcome{Status: 404, RequestBytes: 95, ResponseBytes: 512, Duration: 40 * time.Millisecond})
	s.Record(Outcome{Status: 503, RequestBytes: 2000, ResponseBytes: 20_000_000, Duration: 12 * time.Second})
	s.Record(Outcome{Status: 0, RequestBytes: 0, ResponseBytes: 0, Duration: 0})
	d := c.Series("direct", v6)
	d.AddReading(1)
	d.AddWriting(2)
	d.AddWriting(-1)
	d.Record(Outcome{Status: 301, RequestBytes: 300, ResponseBytes: 250, Duration: 300 * time.Millisecond})
	// IPv4-mapped IPv6 lands on the IPv4 series.
	c.Series("maglev1", netip.MustParseAddr("::ffff:192.0.2.10")).Record(Outcome{Status: 101, RequestBytes: 200, Duration: time.Second})
	c.RejectOutcome("parse_error")
	c.AttributionFallback("no_stamp")
	c.SetSources(Sources{
		IfindexMisses:        func() map[string]uint64 { return map[string]uint64{"ipv4": 3, "ipv6": 1} },
		AttributionFallbacks: func() map[string]uint64 { return map[string]uint64{"no_stamp": 2, "unbound_device": 5} },
		BPFEvents:            func() map[string]uint64 { return map[string]uint64{"stamped": 42, "skb_missing": 1} },
	})
}

// encode writes families in the given format.
func encode(t testing.TB, mfs []*dto.MetricFamily, f expfmt.Format) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, f)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatalf("encode %s: %v", mf.GetName(), err)
		}
	}
	if cl, ok := enc.(expfmt.Closer); ok {
		if err := cl.Close(); err != nil {
			t.Fatalf("close encoder: %v", err)
		}
	}
	return buf.Bytes()
}

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testenv.Golden(t, name, got, *update)
}
