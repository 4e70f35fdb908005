package exporter

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

var testStart = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// newTestCollector returns a collector with a fixed clock (60 s after its
// start) and a fixed set of outcomes.
func newTestCollector(t testing.TB, cfg collector.Config) *collector.Collector {
	t.Helper()
	var mu sync.Mutex
	now := testStart
	c, err := collector.New(cfg, collector.Options{
		Build: collector.BuildInfo{Version: "1.2.3", Revision: "abc123", GoVersion: "go1.26"},
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			t := now
			now = testStart.Add(time.Minute)
			return t
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func populate(c *collector.Collector) {
	v4 := netip.MustParseAddr("192.0.2.10")
	v6 := netip.MustParseAddr("2001:db8::80")
	s := c.Series("maglev1", v4)
	s.ConnOpened()
	s.ConnOpened()
	s.ConnClosed()
	s.Record(collector.Outcome{Status: 200, RequestBytes: 80, ResponseBytes: 1500, Duration: 2 * time.Millisecond})
	s.Record(collector.Outcome{Status: 204, RequestBytes: 120, ResponseBytes: 90, Duration: 700 * time.Microsecond})
	s.Record(collector.Outcome{Status: 404, RequestBytes: 95, ResponseBytes: 512, Duration: 40 * time.Millisecond})
	s.Record(collector.Outcome{Status: 503, RequestBytes: 2000, ResponseBytes: 20_000_000, Duration: 12 * time.Second})
	d := c.Series("direct", v6)
	d.AddReading(1)
	d.AddWriting(1)
	d.Record(collector.Outcome{Status: 301, RequestBytes: 300, ResponseBytes: 250, Duration: 300 * time.Millisecond})
	c.Series("direct", v4).Record(collector.Outcome{Status: 200, RequestBytes: 10, ResponseBytes: 20, Duration: time.Millisecond})
	c.RejectOutcome("parse_error")
	c.SetSources(collector.Sources{
		IfindexMisses: func() map[string]uint64 { return map[string]uint64{"ipv4": 3, "ipv6": 1} },
		BPFEvents:     func() map[string]uint64 { return map[string]uint64{"stamped": 42} },
	})
}

// newTestServer returns a server over a populated collector.
func newTestServer(t testing.TB, reg prometheus.Gatherer) *Server {
	t.Helper()
	c := newTestCollector(t, collector.Config{})
	populate(c)
	s, err := New(Options{Collector: c, Registry: reg, Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// get performs a request against the handler.
func get(t testing.TB, h http.Handler, target string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t testing.TB, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	testenv.Golden(t, name, got, *update)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
