package collector

import (
	"slices"

	dto "github.com/prometheus/client_model/go"
)

// MetricFamilies returns the snapshot as Prometheus metric families sorted
// by name, leaving out families without metrics. Within a family, metrics
// follow the snapshot's series order, then code class. The families point
// into the snapshot; neither may be modified afterwards.
func (s *Snapshot) MetricFamilies() []*dto.MetricFamily {
	b := &builder{s: s}
	b.labels()
	var out []*dto.MetricFamily
	for _, f := range families() {
		mf := &dto.MetricFamily{Name: new(f.name), Help: new(f.help)}
		b.fill(mf, f.name)
		if len(mf.Metric) > 0 {
			out = append(out, mf)
		}
	}
	return out
}

// builder allocates protobuf messages in chunks: a scrape of 10k series
// makes hundreds of thousands of them.
type builder struct {
	s        *Snapshot
	series   [][]*dto.LabelPair             // per series: source_tag, vip
	coded    [][numClasses][]*dto.LabelPair // per series and class: code, source_tag, vip
	metrics  []dto.Metric
	counters []dto.Counter
	gauges   []dto.Gauge
	hists    []dto.Histogram
	buckets  []dto.Bucket
	pairs    []dto.LabelPair
	floats   []float64
	ptrs     []*dto.LabelPair
	bptrs    []*dto.Bucket
}

func take[T any](s *[]T) *T {
	if len(*s) == 0 {
		*s = make([]T, 1024)
	}
	p := &(*s)[0]
	*s = (*s)[1:]
	return p
}

func takeN[T any](s *[]T, n int) []T {
	if len(*s) < n {
		*s = make([]T, max(1024, n))
	}
	p := (*s)[:n:n]
	*s = (*s)[n:]
	return p
}

func (b *builder) pair(name, value *string) *dto.LabelPair {
	p := take(&b.pairs)
	p.Name, p.Value = name, value
	return p
}

func (b *builder) labels() {
	nTag, nVIP, nCode := new(labelSourceTag), new(labelVIP), new(labelCode)
	var codes [numClasses]*dto.LabelPair
	for i := range codes {
		codes[i] = b.pair(nCode, new(className(i)))
	}
	b.series = make([][]*dto.LabelPair, len(b.s.Series))
	b.coded = make([][numClasses][]*dto.LabelPair, len(b.s.Series))
	for i := range b.s.Series {
		ss := &b.s.Series[i]
		tag, vip := b.pair(nTag, &ss.SourceTag), b.pair(nVIP, &ss.VIP)
		b.series[i] = append(takeN(&b.ptrs, 2)[:0], tag, vip)
		for _, cc := range ss.Codes {
			cl := classIndex(cc.Code)
			b.coded[i][cl] = append(takeN(&b.ptrs, 3)[:0], codes[cl], tag, vip)
		}
	}
}

func (b *builder) metric(mf *dto.MetricFamily, labels []*dto.LabelPair) *dto.Metric {
	m := take(&b.metrics)
	m.Label = labels
	mf.Metric = append(mf.Metric, m)
	return m
}

func (b *builder) counter(mf *dto.MetricFamily, labels []*dto.LabelPair, v float64) {
	f := take(&b.floats)
	*f = v
	c := take(&b.counters)
	c.Value = f
	b.metric(mf, labels).Counter = c
}

func (b *builder) gauge(mf *dto.MetricFamily, labels []*dto.LabelPair, v float64) {
	f := take(&b.floats)
	*f = v
	g := take(&b.gauges)
	g.Value = f
	b.metric(mf, labels).Gauge = g
}

// fill adds the metrics of family name to mf and sets its type.
func (b *builder) fill(mf *dto.MetricFamily, name string) {
	s := b.s
	switch name {
	case metricRequests, metricRequestBytes, metricResponseBytes, metricRequestSeconds:
		mf.Type = dto.MetricType_COUNTER.Enum()
		for i := range s.Series {
			for _, cc := range s.Series[i].Codes {
				b.counter(mf, b.coded[i][classIndex(cc.Code)], codeValue(name, cc))
			}
		}
	case metricDurationHist, metricReqSizeHist, metricRespSizeHist:
		mf.Type = dto.MetricType_HISTOGRAM.Enum()
		for i := range s.Series {
			h := &s.Series[i].Duration
			switch name {
			case metricReqSizeHist:
				h = &s.Series[i].RequestSize
			case metricRespSizeHist:
				h = &s.Series[i].ResponseSize
			}
			b.metric(mf, b.series[i]).Histogram = b.histogram(h)
		}
	case metricConnsTotal, metricConnsActive:
		mf.Type = dto.MetricType_GAUGE.Enum()
		if name == metricConnsTotal {
			mf.Type = dto.MetricType_COUNTER.Enum()
		}
		for i := range s.Series {
			if c := s.Series[i].Connections; c != nil {
				if name == metricConnsTotal {
					b.counter(mf, b.series[i], float64(c.Total))
				} else {
					b.gauge(mf, b.series[i], float64(c.Active))
				}
			}
		}
	case metricReading, metricWriting:
		mf.Type = dto.MetricType_GAUGE.Enum()
		for i := range s.Series {
			if f := s.Series[i].InFlight; f != nil {
				v := f.Reading
				if name == metricWriting {
					v = f.Writing
				}
				b.gauge(mf, b.series[i], float64(v))
			}
		}
	case metricSynReceived, metricSynackSent, metricSynackWrong:
		mf.Type = dto.MetricType_COUNTER.Enum()
		for i := range s.Series {
			h := s.Series[i].Handshakes
			if h == nil {
				continue
			}
			v := h.SynReceived
			switch name {
			case metricSynackSent:
				v = h.SynackSent
			case metricSynackWrong:
				v = h.SynackWrongEgress
			}
			b.counter(mf, b.series[i], float64(v))
		}
	case metricIfindexMisses, metricFallbacks, metricRejected, metricBPFEvents:
		mf.Type = dto.MetricType_COUNTER.Enum()
		label, values := labelFamily, s.Meta.IfindexMisses
		switch name {
		case metricFallbacks:
			label, values = labelReason, s.Meta.AttributionFallbacks
		case metricRejected:
			label, values = labelReason, s.Meta.OutcomesRejected
		case metricBPFEvents:
			label, values = labelEvent, s.Meta.BPFEvents
		}
		nLabel := new(label)
		keys := make([]string, 0, len(values))
		for k := range values {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b.counter(mf, []*dto.LabelPair{b.pair(nLabel, new(k))}, float64(values[k]))
		}
	case metricOverflow:
		mf.Type = dto.MetricType_COUNTER.Enum()
		b.counter(mf, nil, float64(s.Meta.SeriesOverflow))
	case metricSeries, metricSeriesLimit:
		mf.Type = dto.MetricType_GAUGE.Enum()
		v := s.Meta.Series
		if name == metricSeriesLimit {
			v = s.Meta.SeriesLimit
		}
		b.gauge(mf, nil, float64(v))
	case metricBuildInfo:
		mf.Type = dto.MetricType_GAUGE.Enum()
		bi := s.Meta.Build
		b.gauge(mf, []*dto.LabelPair{
			b.pair(new(labelGoVersion), new(bi.GoVersion)),
			b.pair(new(labelRevision), new(bi.Revision)),
			b.pair(new(labelVersion), new(bi.Version)),
		}, 1)
	}
}

func codeValue(name string, cc CodeCounts) float64 {
	switch name {
	case metricRequestBytes:
		return float64(cc.RequestBytes)
	case metricResponseBytes:
		return float64(cc.ResponseBytes)
	case metricRequestSeconds:
		return cc.DurationSeconds
	}
	return float64(cc.Requests)
}

func (b *builder) histogram(h *Histogram) *dto.Histogram {
	if h.native != nil {
		return h.native
	}
	d := take(&b.hists)
	d.SampleCount = &h.Count
	d.SampleSum = &h.Sum
	d.Bucket = takeN(&b.bptrs, len(h.Bounds))
	for i := range h.Bounds {
		bk := take(&b.buckets)
		bk.UpperBound, bk.CumulativeCount = &h.Bounds[i], &h.Cumulative[i]
		d.Bucket[i] = bk
	}
	return d
}
