package exporter

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ipng/ipng-stats/collector"
)

// discard is a ResponseWriter that counts bytes.
type discard struct {
	h http.Header
	n int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkScrape serves a full scrape of n (tag, vip) series, each with
// 2xx and 4xx requests, in each format. samples/op counts the exposed time
// series (lines of the text format without comments).
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{200, 10000} {
		_, srv := scrapeServer(b, n)
		h := srv.Handler()
		samples := countSamples(b, h)
		for _, f := range []struct{ name, query, accept string }{
			{"text", "", ""},
			{"openmetrics", "format=openmetrics", ""},
			{"protobuf", "", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"},
			{"json", "format=json", ""},
			{"text-gzip", "", "gzip"},
			{"text-zstd", "", "zstd"},
		} {
			b.Run(fmt.Sprintf("series=%d/samples=%d/%s", n, samples, f.name), func(b *testing.B) {
				req := httptest.NewRequest(http.MethodGet, "/metrics?"+f.query, nil)
				if f.name == "text-gzip" || f.name == "text-zstd" {
					req.Header.Set("Accept-Encoding", f.accept)
				} else if f.accept != "" {
					req.Header.Set("Accept", f.accept)
				}
				var bytes int
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					w := &discard{h: http.Header{}}
					h.ServeHTTP(w, req)
					bytes = w.n
				}
				b.ReportMetric(float64(bytes), "bytes/scrape")
			})
		}
	}
}

func countSamples(b *testing.B, h http.Handler) int {
	b.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	n := 0
	for _, line := range bytesLines(w.Body.Bytes()) {
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n
}

func bytesLines(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i, c := range b {
		if c == '\n' {
			out = append(out, b[start:i])
			start = i + 1
		}
	}
	return out
}

// BenchmarkScrapeRegistry compares the exporter's gatherer with promhttp over
// a prometheus.Registry holding the collector (Registry.Gather hashes and
// checks every series), both serving the Prometheus text format.
func BenchmarkScrapeRegistry(b *testing.B) {
	const n = 10000
	c, srv := scrapeServer(b, n)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	for _, h := range []struct {
		name string
		h    http.Handler
	}{
		{"exporter", srv.Handler()},
		{"registry", promhttp.HandlerFor(reg, promhttp.HandlerOpts{})},
	} {
		b.Run(fmt.Sprintf("series=%d/%s", n, h.name), func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.h.ServeHTTP(&discard{h: http.Header{}}, req)
			}
		})
	}
}

// scrapeServer is a server over n (tag, vip) series, each with 2xx and 4xx
// requests.
func scrapeServer(b *testing.B, n int) (*collector.Collector, *Server) {
	b.Helper()
	c := newTestCollector(b, collector.Config{MaxSeries: n})
	for i := range n {
		s := c.Series(fmt.Sprintf("tag%d", i%4), netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		s.Record(collector.Outcome{Status: 200, RequestBytes: 300, ResponseBytes: 5000, Duration: 3 * time.Millisecond})
		s.Record(collector.Outcome{Status: 404, RequestBytes: 200, ResponseBytes: 100, Duration: time.Millisecond})
	}
	srv, err := New(Options{Collector: c})
	if err != nil {
		b.Fatal(err)
	}
	return c, srv
}
