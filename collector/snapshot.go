package collector

import (
	"cmp"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Filter selects (source_tag, vip) series. Empty fields match everything;
// non-empty fields match any of their values. VIPs are canonical address
// strings (see Series) or OverflowVIP.
type Filter struct {
	SourceTags []string
	VIPs       []string
}

func (f Filter) match(e *entry) bool {
	return (len(f.SourceTags) == 0 || slices.Contains(f.SourceTags, e.tag)) &&
		(len(f.VIPs) == 0 || slices.Contains(f.VIPs, e.vip))
}

// Snapshot is a copy of the collector's state, taken without stopping
// recorders. Each histogram is internally consistent (its count is the sum
// of its buckets); counters of different series may be a few requests apart.
type Snapshot struct {
	Time   time.Time
	Start  time.Time
	Series []SeriesSnapshot // sorted by source tag, then VIP (overflow last)
	Meta   Meta
}

// SeriesSnapshot is one (source_tag, vip) series.
type SeriesSnapshot struct {
	SourceTag string
	VIP       string
	// Codes has one element per code class seen, in the order 1xx..5xx, unknown.
	Codes        []CodeCounts
	Duration     Histogram // seconds
	RequestSize  Histogram // bytes
	ResponseSize Histogram // bytes
	// Connections is nil unless a source reported connections for this series.
	Connections *Connections
	// InFlight is nil unless a source reported reading/writing requests.
	InFlight *InFlight
	// Handshakes is nil unless a source reported TCP handshake stages.
	Handshakes *Handshakes
	Rate       Rates
}

// CodeCounts are the counters of one code class.
type CodeCounts struct {
	Code            string // "1xx".."5xx" or "unknown"
	Requests        uint64
	RequestBytes    uint64
	ResponseBytes   uint64
	DurationSeconds float64 // sum of request durations
}

// Histogram is a classic histogram. Cumulative[i] counts observations
// <= Bounds[i]; Count includes the +Inf bucket.
type Histogram struct {
	Bounds     []float64
	Cumulative []uint64
	Count      uint64
	Sum        float64
	native     *dto.Histogram // classic and native buckets, when enabled
}

// Connections are the connection counters of a series.
type Connections struct {
	Total  uint64
	Active int64
}

// Handshakes are the TCP handshake stages of a series, counted on the
// interfaces bound to its source tag. Completed handshakes are
// Connections.Total (the sock_ops program's accepted connections).
type Handshakes struct {
	SynReceived       uint64 // SYNs that arrived on a bound interface
	SynackSent        uint64 // SYN-ACKs the stack sent in answer to them
	SynackWrongEgress uint64 // SYN-ACKs that left through a bound interface
}

// InFlight are the requests currently being read or written.
type InFlight struct {
	Reading, Writing int64
}

// Meta are the agent-wide counters.
type Meta struct {
	Build                BuildInfo
	Series               int // (source_tag, vip) series, not counting overflow series
	SeriesLimit          int
	SeriesOverflow       uint64 // handle lookups folded into an overflow series
	IfindexMisses        map[string]uint64
	AttributionFallbacks map[string]uint64
	OutcomesRejected     map[string]uint64
	BPFEvents            map[string]uint64
}

// Snapshot copies the series selected by f and all meta counters.
// It waits for a batch in progress (BeginBatch).
func (c *Collector) Snapshot(f Filter) *Snapshot {
	c.batch.RLock()
	defer c.batch.RUnlock()
	src := c.sources.Load()
	if src.Refresh != nil {
		src.Refresh()
	}
	call := func(fn func() map[string]uint64) map[string]uint64 {
		if fn == nil {
			return nil
		}
		return fn()
	}
	s := &Snapshot{
		Time:  c.now(),
		Start: c.start,
		Meta: Meta{
			Build:                c.build,
			Series:               int(c.nReal.Load()),
			SeriesLimit:          int(c.limit.Load()),
			SeriesOverflow:       c.folded.Load(),
			IfindexMisses:        call(src.IfindexMisses),
			AttributionFallbacks: c.fallbacks.values(call(src.AttributionFallbacks)),
			OutcomesRejected:     c.rejects.values(nil),
			BPFEvents:            call(src.BPFEvents),
		},
	}
	entries := c.sortedEntries()
	s.Series = make([]SeriesSnapshot, 0, len(entries))
	r := &reader{w: make([]uint64, c.lay.words)}
	for _, e := range entries {
		if !f.match(e) {
			continue
		}
		s.Series = append(s.Series, SeriesSnapshot{})
		c.read(e, &s.Series[len(s.Series)-1], r)
	}
	return s
}

// reader carries the scratch space and the allocation chunks of one
// snapshot, so that reading 10k series does not make 100k small slices.
type reader struct {
	w      []uint64 // one shard's worth of words, summed over shards
	counts []uint64
	codes  []CodeCounts
}

// read fills ss from e.
func (c *Collector) read(e *entry, ss *SeriesSnapshot, r *reader) {
	l := c.lay
	w := r.w
	clear(w)
	for i := range e.shards {
		for j := range e.shards[i].w {
			w[j] += e.shards[i].w[j].Load()
		}
	}
	ss.SourceTag, ss.VIP = e.tag, e.vip

	nd, nq, nr := l.dur.n(), l.req.n(), l.resp.n()
	durCounts := takeN(&r.counts, nd)
	ss.Codes = takeN(&r.codes, numClasses)[:0]
	var reqSum, respSum, durSum uint64
	for cl := range numClasses {
		var n uint64
		for d, v := range w[cl*nd : (cl+1)*nd] {
			n += v
			durCounts[d] += v
		}
		sums := w[l.offSums+cl*numSums:]
		reqSum += sums[sumReqBytes]
		respSum += sums[sumRespBytes]
		durSum += sums[sumDurNanos]
		if n == 0 && sums[sumReqBytes] == 0 && sums[sumRespBytes] == 0 && sums[sumDurNanos] == 0 {
			continue
		}
		ss.Codes = append(ss.Codes, CodeCounts{
			Code:            className(cl),
			Requests:        n,
			RequestBytes:    sums[sumReqBytes],
			ResponseBytes:   sums[sumRespBytes],
			DurationSeconds: float64(sums[sumDurNanos]) / 1e9,
		})
	}
	reqCounts, respCounts := takeN(&r.counts, nq), takeN(&r.counts, nr)
	for q := range nq {
		for r, v := range w[l.offSizes+q*nr : l.offSizes+(q+1)*nr] {
			reqCounts[q] += v
			respCounts[r] += v
		}
	}
	ss.Duration = classic(l.dur.bounds, durCounts, takeN(&r.counts, nd-1), float64(durSum)/1e9)
	ss.RequestSize = classic(l.req.bounds, reqCounts, takeN(&r.counts, nq-1), float64(reqSum))
	ss.ResponseSize = classic(l.resp.bounds, respCounts, takeN(&r.counts, nr-1), float64(respSum))
	if e.native != nil {
		d, q, r := e.native.write()
		ss.Duration.setNative(d)
		ss.RequestSize.setNative(q)
		ss.ResponseSize.setNative(r)
	}

	conn := w[l.offConns:]
	if e.conns.Load() {
		ss.Connections = &Connections{Total: conn[connTotal], Active: int64(conn[connActive])}
	}
	if e.inFlight.Load() {
		ss.InFlight = &InFlight{Reading: int64(conn[connReading]), Writing: int64(conn[connWriting])}
	}
	if e.hs.Load() {
		ss.Handshakes = &Handshakes{SynReceived: conn[hsSynReceived], SynackSent: conn[hsSynackSent],
			SynackWrongEgress: conn[hsSynackWrongEgress]}
	}
	ss.Rate = e.rate.values()
}

// classic turns per-bucket counts (the last one is +Inf) into a Histogram
// whose cumulative counts are stored in cum (len(bounds) long).
func classic(bounds []float64, counts, cum []uint64, sum float64) Histogram {
	h := Histogram{Bounds: bounds, Cumulative: cum, Sum: sum}
	for i, n := range counts {
		h.Count += n
		if i < len(bounds) {
			h.Cumulative[i] = h.Count
		}
	}
	return h
}

// setNative replaces h's values by those of a client_golang histogram, whose
// classic buckets, count and sum are consistent with its native buckets.
func (h *Histogram) setNative(m *dto.Histogram) {
	if m == nil {
		return
	}
	h.native = m
	h.Count, h.Sum = m.GetSampleCount(), m.GetSampleSum()
	for i, b := range m.GetBucket() {
		if i < len(h.Cumulative) {
			h.Cumulative[i] = b.GetCumulativeCount()
		}
	}
}

// sortedEntries returns all entries ordered by tag, then address, with each
// tag's overflow series last. The order is cached until a series is added.
func (c *Collector) sortedEntries() []*entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sorted) != len(c.entries) {
		c.sorted = slices.Clone(c.entries)
		slices.SortFunc(c.sorted, func(a, b *entry) int {
			if n := cmp.Compare(a.tag, b.tag); n != 0 {
				return n
			}
			switch {
			case a.addr.IsValid() && !b.addr.IsValid():
				return -1
			case !a.addr.IsValid() && b.addr.IsValid():
				return 1
			}
			return a.addr.Compare(b.addr)
		})
	}
	return c.sorted
}
