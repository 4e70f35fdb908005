package collector

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// benchOutcomes is a fixed mix of statuses, sizes and durations, so that
// bucket searches and class selection are not trivially predictable.
func benchOutcomes() []Outcome {
	statuses := []int{200, 200, 200, 304, 404, 200, 502, 200}
	out := make([]Outcome, 64)
	for i := range out {
		out[i] = Outcome{
			Status:        statuses[i%len(statuses)],
			RequestBytes:  uint64(80 + (i*37)%2000),
			ResponseBytes: uint64(100 << (i % 16)),
			Duration:      time.Duration(50_000 << (i % 18)),
		}
	}
	return out
}

var benchVIP = netip.MustParseAddr("192.0.2.10")

// BenchmarkRecord is the hot path: one Record on a cached handle.
func BenchmarkRecord(b *testing.B) {
	c, _ := newTestCollector(b, Config{})
	s := c.Series("maglev1", benchVIP)
	outs := benchOutcomes()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Record(outs[i&63])
	}
}

// BenchmarkRecordParallel records into one (tag, vip) from every
// goroutine, each with its own handle as a connection would have.
func BenchmarkRecordParallel(b *testing.B) {
	c, _ := newTestCollector(b, Config{})
	outs := benchOutcomes()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		s := c.Series("maglev1", benchVIP)
		i := 0
		for pb.Next() {
			s.Record(outs[i&63])
			i++
		}
	})
}

// BenchmarkRecordParallelOneShard has every goroutine share one shard: the
// worst case of two hot connections landing on the same stripe.
func BenchmarkRecordParallelOneShard(b *testing.B) {
	c, _ := newTestCollector(b, Config{Shards: 1})
	s := c.Series("maglev1", benchVIP)
	outs := benchOutcomes()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.Record(outs[i&63])
			i++
		}
	})
}

// BenchmarkRecordNative is Record with native histograms enabled.
func BenchmarkRecordNative(b *testing.B) {
	c, _ := newTestCollector(b, Config{NativeHistograms: true})
	s := c.Series("maglev1", benchVIP)
	outs := benchOutcomes()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Record(outs[i&63])
	}
}

// BenchmarkCollectorRecord is the convenience path that resolves the series
// on every call (map lookup under a striped read lock).
func BenchmarkCollectorRecord(b *testing.B) {
	c, _ := newTestCollector(b, Config{})
	outs := benchOutcomes()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Record("maglev1", benchVIP, outs[i&63])
	}
}

// BenchmarkSeriesLookup is the once-per-connection cost of resolving a handle.
func BenchmarkSeriesLookup(b *testing.B) {
	c, _ := newTestCollector(b, Config{})
	c.Series("maglev1", benchVIP)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = c.Series("maglev1", benchVIP)
	}
}

// BenchmarkClientGolangHistogramVec is the reference from the issue:
// HistogramVec.WithLabelValues + Observe, per request.
func BenchmarkClientGolangHistogramVec(b *testing.B) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "x_seconds", Help: "x", Buckets: DefaultDurationBuckets(),
	}, []string{"source_tag", "vip"})
	outs := benchOutcomes()
	vip := benchVIP.String()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.WithLabelValues("maglev1", vip).Observe(outs[i&63].Duration.Seconds())
	}
}

// BenchmarkClientGolangHistogramVecParallel is the same from every goroutine.
func BenchmarkClientGolangHistogramVecParallel(b *testing.B) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "x_seconds", Help: "x", Buckets: DefaultDurationBuckets(),
	}, []string{"source_tag", "vip"})
	outs := benchOutcomes()
	vip := benchVIP.String()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h.WithLabelValues("maglev1", vip).Observe(outs[i&63].Duration.Seconds())
			i++
		}
	})
}

// BenchmarkClientGolangEquivalent does with cached client_golang metrics
// what one Record does: four per-class counters and three histograms.
func BenchmarkClientGolangEquivalent(b *testing.B) {
	labels := []string{"source_tag", "vip", "code"}
	cv := func(n string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: n, Help: n}, labels)
	}
	hist := func(n string, bounds []float64) prometheus.Observer {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: n, Help: n, Buckets: bounds},
			[]string{"source_tag", "vip"}).WithLabelValues("maglev1", benchVIP.String())
	}
	reqs, rqb, rsb, secs := cv("a_total"), cv("b_total"), cv("c_total"), cv("d_total")
	var byClass [numClasses][4]prometheus.Counter
	for cl := range byClass {
		for j, v := range []*prometheus.CounterVec{reqs, rqb, rsb, secs} {
			byClass[cl][j] = v.WithLabelValues("maglev1", benchVIP.String(), className(cl))
		}
	}
	hd, hq, hr := hist("d_seconds", DefaultDurationBuckets()), hist("q_bytes", DefaultSizeBuckets()), hist("r_bytes", DefaultSizeBuckets())
	outs := benchOutcomes()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := outs[i&63]
		cs := &byClass[classOf(o.Status)]
		cs[0].Inc()
		cs[1].Add(float64(o.RequestBytes))
		cs[2].Add(float64(o.ResponseBytes))
		cs[3].Add(o.Duration.Seconds())
		hd.Observe(o.Duration.Seconds())
		hq.Observe(float64(o.RequestBytes))
		hr.Observe(float64(o.ResponseBytes))
	}
}

// BenchmarkAtomicAdd is the floor: one uncontended atomic add on this CPU.
func BenchmarkAtomicAdd(b *testing.B) {
	var w atomic.Uint64
	for i := 0; i < b.N; i++ {
		w.Add(uint64(i))
	}
}

// BenchmarkSnapshot10k reads 10k (tag, vip) series and builds their metric
// families (no encoding; see the exporter's BenchmarkScrape).
func BenchmarkSnapshot10k(b *testing.B) {
	c, _ := newTestCollector(b, Config{MaxSeries: 10000})
	fill(c, 10000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = c.Snapshot(Filter{}).MetricFamilies()
	}
}

// BenchmarkMemoryPerSeries reports the heap bytes one (tag, vip) series
// costs with the default configuration, after one request was recorded.
func BenchmarkMemoryPerSeries(b *testing.B) {
	const n = 2000
	var total float64
	for i := 0; i < b.N; i++ {
		c, _ := newTestCollector(b, Config{MaxSeries: n})
		before := heapAlloc()
		fill(c, n)
		total += float64(heapAlloc()-before) / n
		runtime.KeepAlive(c)
	}
	b.ReportMetric(total/float64(b.N), "bytes/series")
	b.ReportMetric(0, "ns/op")
}

// fill creates n series with one 2xx request each.
func fill(c *Collector, n int) {
	for i := range n {
		vip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		c.Series(fmt.Sprintf("tag%d", i%4), vip).Record(Outcome{Status: 200, RequestBytes: 100, ResponseBytes: 1000, Duration: time.Millisecond})
	}
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
