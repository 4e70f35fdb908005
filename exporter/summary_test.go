package exporter

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/ipng/ipng-stats/collector"
)

func TestHistogramQuantile(t *testing.T) {
	// 10 observations: 4 in (0, 1], 4 in (1, 2], 1 in (2, 4], 1 above 4.
	h := Histogram{Buckets: []Bucket{{1, 4}, {2, 8}, {4, 9}}, Count: 10}
	for _, tc := range []struct{ q, want float64 }{
		{0, 0}, {0.2, 0.5}, {0.4, 1}, {0.5, 1.25}, {0.8, 2}, {0.85, 3}, {0.9, 4}, {0.99, 4}, {1, 4},
	} {
		if got := h.Quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	for _, q := range []float64{-0.1, 1.1, math.NaN()} {
		if got := h.Quantile(q); !math.IsNaN(got) {
			t.Errorf("Quantile(%v) = %v, want NaN", q, got)
		}
	}
	if got := (Histogram{Buckets: []Bucket{{1, 0}}}).Quantile(0.5); !math.IsNaN(got) {
		t.Errorf("empty histogram: %v, want NaN", got)
	}
}

func TestHistogramMerge(t *testing.T) {
	var h Histogram
	a := Histogram{Buckets: []Bucket{{1, 1}, {2, 3}}, Count: 4, Sum: 5}
	if !h.Merge(a) || !h.Merge(a) {
		t.Fatal("merging equal bounds refused")
	}
	if h.Count != 8 || h.Sum != 10 || h.Buckets[1].Count != 6 || a.Buckets[1].Count != 3 {
		t.Errorf("merged %+v (a %+v)", h, a)
	}
	if h.Merge(Histogram{Buckets: []Bucket{{1, 1}, {3, 3}}, Count: 4}) || h.Count != 8 {
		t.Errorf("merging other bounds changed h: %+v", h)
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize(DocumentSeries{
		Codes: map[string]CodeStats{
			"2xx": {Requests: 3, RequestBytes: 300, ResponseBytes: 3000},
			"5xx": {Requests: 1, RequestBytes: 100, ResponseBytes: 1000},
		},
		Histograms: Histograms{RequestDurationSeconds: Histogram{Buckets: []Bucket{{0.1, 2}, {0.2, 4}}, Count: 4}},
		Rate:       Rate{M1: 2},
	})
	if s.Requests != 4 || s.Share["2xx"] != 0.75 || s.Share["5xx"] != 0.25 {
		t.Errorf("requests/share: %+v", s)
	}
	if s.RequestBytesPerSecond != 200 || s.ResponseBytesPerSecond != 2000 {
		t.Errorf("bytes/s: in %v out %v, want 200 2000", s.RequestBytesPerSecond, s.ResponseBytesPerSecond)
	}
	if s.LatencyP50Seconds == nil || *s.LatencyP50Seconds != 0.1 || s.LatencyP99Seconds == nil || math.Abs(*s.LatencyP99Seconds-0.198) > 1e-9 {
		t.Errorf("latency: %v %v", s.LatencyP50Seconds, s.LatencyP99Seconds)
	}
	if e := Summarize(DocumentSeries{}); e.LatencyP50Seconds != nil || len(e.Share) != 0 || e.RequestBytesPerSecond != 0 {
		t.Errorf("empty series: %+v", e)
	}
}

// TestHealthAndMount: Options.Health appears as meta.health; a mounted page
// is served and linked from the landing page.
func TestHealthAndMount(t *testing.T) {
	c := newTestCollector(t, collector.Config{})
	populate(c)
	s, err := New(Options{Collector: c, Health: func() Health {
		return Health{Component: "agent", AttributionMode: "bpf", BPF: true, DefaultTag: "direct",
			Bindings: []Binding{{Device: "eth1", Family: "any", SourceTag: "tag1", Ifindex: 7, Present: true}}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Mount("/page", "Page", "a page", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("page body"))
	})); err != nil {
		t.Fatal(err)
	}
	var d Document
	if err := json.Unmarshal(body(t, get(t, s.Handler(), "/metrics?format=json")), &d); err != nil {
		t.Fatal(err)
	}
	h := d.Meta.Health
	if h == nil || !h.BPF || h.AttributionMode != "bpf" || len(h.Bindings) != 1 || h.Bindings[0].Ifindex != 7 {
		t.Errorf("meta.health = %+v", h)
	}
	if got := string(body(t, get(t, s.Handler(), "/page"))); got != "page body" {
		t.Errorf("/page = %q", got)
	}
	if got := string(body(t, get(t, s.Handler(), "/"))); !strings.Contains(got, `href="/page"`) {
		t.Errorf("landing page does not link /page:\n%s", got)
	}
	// Without Options.Health the field is absent.
	if got := string(body(t, get(t, newTestServer(t, nil).Handler(), "/metrics?format=json"))); strings.Contains(got, `"health"`) {
		t.Errorf("health present without Options.Health: %s", got)
	}
}
