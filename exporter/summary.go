package exporter

import (
	"math"
	"slices"
)

// Summary is what a person reads first about a series (the status page,
// `ipng-stats top`): derived from the counters, histograms and rate of the
// same document, so it adds no state to the collector.
type Summary struct {
	// Requests is the total over all code classes.
	Requests uint64 `json:"requests"`
	// Share is each code class's fraction of Requests (classes seen only).
	Share map[string]float64 `json:"share"`
	// LatencyP50Seconds and LatencyP99Seconds are estimated from the
	// duration histogram since the agent started, interpolating linearly
	// inside a bucket like PromQL's histogram_quantile; absent without requests.
	LatencyP50Seconds *float64 `json:"latency_p50_seconds,omitempty"`
	LatencyP99Seconds *float64 `json:"latency_p99_seconds,omitempty"`
	// RequestBytesPerSecond and ResponseBytesPerSecond are rate.m1 times the
	// mean request and response size since the agent started.
	RequestBytesPerSecond  float64 `json:"request_bytes_per_second"`
	ResponseBytesPerSecond float64 `json:"response_bytes_per_second"`
}

// Summarize derives the summary of a series from its other fields.
func Summarize(s DocumentSeries) Summary {
	var out Summary
	var in, resp uint64
	for _, c := range s.Codes {
		out.Requests += c.Requests
		in += c.RequestBytes
		resp += c.ResponseBytes
	}
	out.Share = make(map[string]float64, len(s.Codes))
	for code, c := range s.Codes {
		if out.Requests > 0 {
			out.Share[code] = float64(c.Requests) / float64(out.Requests)
		}
	}
	if out.Requests > 0 {
		mean := func(b uint64) float64 { return s.Rate.M1 * float64(b) / float64(out.Requests) }
		out.RequestBytesPerSecond, out.ResponseBytesPerSecond = mean(in), mean(resp)
	}
	out.LatencyP50Seconds = optional(s.Histograms.RequestDurationSeconds.Quantile(0.5))
	out.LatencyP99Seconds = optional(s.Histograms.RequestDurationSeconds.Quantile(0.99))
	return out
}

func optional(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}

// Quantile estimates the q-quantile (0 ≤ q ≤ 1) of h like PromQL's
// histogram_quantile: it finds the bucket holding rank q·Count and
// interpolates linearly between its bounds (the first bucket starts at 0
// when its bound is positive). A rank in the +Inf bucket gives the highest
// finite bound. NaN when h is empty or q is out of range.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 || q < 0 || q > 1 || math.IsNaN(q) {
		return math.NaN()
	}
	rank := q * float64(h.Count)
	i, _ := slices.BinarySearchFunc(h.Buckets, rank, func(b Bucket, r float64) int {
		if float64(b.Count) < r {
			return -1
		}
		return 1
	})
	if i == len(h.Buckets) {
		if i == 0 {
			return math.NaN()
		}
		return h.Buckets[i-1].LE
	}
	lower, below := 0.0, uint64(0)
	if i > 0 {
		lower, below = h.Buckets[i-1].LE, h.Buckets[i-1].Count
	} else if h.Buckets[0].LE <= 0 {
		return h.Buckets[0].LE
	}
	upper, in := h.Buckets[i].LE, h.Buckets[i].Count-below
	if in == 0 {
		return upper
	}
	return lower + (upper-lower)*(rank-float64(below))/float64(in)
}

// Merge adds o's buckets, count and sum to h. Both must have the same bounds
// (the series of one agent do); otherwise h is left unchanged and Merge
// returns false.
func (h *Histogram) Merge(o Histogram) bool {
	if len(h.Buckets) == 0 && h.Count == 0 {
		h.Buckets = slices.Clone(o.Buckets)
		h.Count, h.Sum = o.Count, o.Sum
		return true
	}
	if len(h.Buckets) != len(o.Buckets) {
		return false
	}
	for i := range h.Buckets {
		if h.Buckets[i].LE != o.Buckets[i].LE {
			return false
		}
	}
	for i := range h.Buckets {
		h.Buckets[i].Count += o.Buckets[i].Count
	}
	h.Count += o.Count
	h.Sum += o.Sum
	return true
}
