package collector

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Native histogram parameters: factor 1.1 gives schema 3 (8 buckets per
// power of two). The bucket limit keeps memory bounded; with no minimum
// reset duration, client_golang lowers the resolution instead of resetting
// the histogram, which would also reset its classic buckets.
const (
	nativeBucketFactor = 1.1
	nativeMaxBuckets   = 160
)

// nativeSet holds the three histograms of a series when native histograms
// are enabled. client_golang's histogram keeps classic and native buckets
// with a consistent count and sum, which a set of independent atomic words
// cannot; the price is about three Observe calls per request.
type nativeSet struct {
	dur, req, resp prometheus.Histogram
}

func newNativeSet(cfg Config) *nativeSet {
	h := func(name string, bounds []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:                            name,
			Help:                            name,
			Buckets:                         bounds,
			NativeHistogramBucketFactor:     nativeBucketFactor,
			NativeHistogramMaxBucketNumber:  nativeMaxBuckets,
			NativeHistogramMinResetDuration: 0,
		})
	}
	return &nativeSet{
		dur:  h(metricDurationHist, cfg.DurationBuckets),
		req:  h(metricReqSizeHist, cfg.RequestSizeBuckets),
		resp: h(metricRespSizeHist, cfg.ResponseSizeBuckets),
	}
}

func (n *nativeSet) observe(o Outcome, ns uint64) {
	n.dur.Observe(float64(ns) / 1e9)
	n.req.Observe(float64(o.RequestBytes))
	n.resp.Observe(float64(o.ResponseBytes))
}

// write returns the three histograms as protobuf messages.
func (n *nativeSet) write() (dur, req, resp *dto.Histogram) {
	get := func(h prometheus.Histogram) *dto.Histogram {
		var m dto.Metric
		if err := h.Write(&m); err != nil {
			return nil
		}
		return m.Histogram
	}
	return get(n.dur), get(n.req), get(n.resp)
}
