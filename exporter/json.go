package exporter

import (
	"encoding/json"
	"io"
	"time"

	"github.com/ipng/ipng-stats/collector"
)

// SchemaVersion is the "schema" field of the JSON document. It changes only
// when a field is removed or changes meaning; new fields keep the version.
const SchemaVersion = 1

// Document is the JSON form of the stats (?format=json). See docs/metrics.md.
type Document struct {
	Schema int              `json:"schema"`
	Meta   DocumentMeta     `json:"meta"`
	Series []DocumentSeries `json:"series"`
}

// DocumentMeta are the agent-wide values. Series, SeriesLimit and the
// counters are not filtered.
type DocumentMeta struct {
	GeneratedAt          time.Time         `json:"generated_at"`
	StartedAt            time.Time         `json:"started_at"`
	UptimeSeconds        float64           `json:"uptime_seconds"`
	Build                Build             `json:"build"`
	Filter               Filter            `json:"filter"`
	Series               int               `json:"series"`
	SeriesLimit          int               `json:"series_limit"`
	SeriesOverflow       uint64            `json:"series_overflow"`
	IfindexMisses        map[string]uint64 `json:"ifindex_misses"`
	AttributionFallbacks map[string]uint64 `json:"attribution_fallbacks"`
	OutcomesRejected     map[string]uint64 `json:"outcomes_rejected"`
	BPFEvents            map[string]uint64 `json:"bpf_events"`
	// Health is absent when the server was built without Options.Health.
	Health *Health `json:"health,omitempty"`
}

// Build is ipng_build_info.
type Build struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"goversion"`
}

// Filter echoes the filter applied to "series" (empty lists: no filter).
type Filter struct {
	SourceTags []string `json:"source_tag"`
	VIPs       []string `json:"vip"`
}

// DocumentSeries is one (source_tag, vip) series.
type DocumentSeries struct {
	SourceTag  string               `json:"source_tag"`
	VIP        string               `json:"vip"`
	Codes      map[string]CodeStats `json:"codes"` // by class: "1xx".."5xx", "unknown"; only classes seen
	Histograms Histograms           `json:"histograms"`
	// Connections is absent when no source reports connections for the series.
	Connections *Connections `json:"connections,omitempty"`
	// RequestsReading and RequestsWriting are absent when no source reports them.
	RequestsReading *int64 `json:"requests_reading,omitempty"`
	RequestsWriting *int64 `json:"requests_writing,omitempty"`
	// Handshakes is absent when the handshake programs report nothing for
	// the series (not loaded, or no interface bound to its tag).
	Handshakes *Handshakes `json:"handshakes,omitempty"`
	Rate       Rate        `json:"rate"`
	// Summary is derived from the fields above (see Summarize).
	Summary Summary `json:"summary"`
}

// CodeStats are the counters of one code class.
type CodeStats struct {
	Requests           uint64  `json:"requests"`
	RequestBytes       uint64  `json:"request_bytes"`
	ResponseBytes      uint64  `json:"response_bytes"`
	DurationSecondsSum float64 `json:"duration_seconds_sum"`
}

// Histograms are the three histograms of a series.
type Histograms struct {
	RequestDurationSeconds Histogram `json:"request_duration_seconds"`
	RequestSizeBytes       Histogram `json:"request_size_bytes"`
	ResponseSizeBytes      Histogram `json:"response_size_bytes"`
}

// Histogram is a classic histogram with cumulative buckets; the +Inf bucket
// is not listed (it equals Count).
type Histogram struct {
	Buckets []Bucket `json:"buckets"`
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum"`
}

// Bucket counts the observations <= LE.
type Bucket struct {
	LE    float64 `json:"le"`
	Count uint64  `json:"count"`
}

// Connections of a series.
type Connections struct {
	Total  uint64 `json:"total"`
	Active int64  `json:"active"`
}

// Handshakes are the TCP handshake stages of a series (completed
// handshakes are Connections.Total).
type Handshakes struct {
	SynReceived       uint64 `json:"syn_received"`
	SynackSent        uint64 `json:"synack_sent"`
	SynackWrongEgress uint64 `json:"synack_wrong_egress"`
}

// Rate is requests per second, exponentially averaged over 1, 5 and 15
// minutes (updated every 5 s).
type Rate struct {
	M1  float64 `json:"m1"`
	M5  float64 `json:"m5"`
	M15 float64 `json:"m15"`
}

// newDocument converts a snapshot; health may be nil.
func newDocument(s *collector.Snapshot, f collector.Filter, health *Health) Document {
	nonNil := func(m map[string]uint64) map[string]uint64 {
		if m == nil {
			return map[string]uint64{}
		}
		return m
	}
	list := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		return l
	}
	d := Document{
		Schema: SchemaVersion,
		Meta: DocumentMeta{
			GeneratedAt:          s.Time.UTC(),
			StartedAt:            s.Start.UTC(),
			UptimeSeconds:        s.Time.Sub(s.Start).Seconds(),
			Build:                Build(s.Meta.Build),
			Filter:               Filter{SourceTags: list(f.SourceTags), VIPs: list(f.VIPs)},
			Series:               s.Meta.Series,
			SeriesLimit:          s.Meta.SeriesLimit,
			SeriesOverflow:       s.Meta.SeriesOverflow,
			IfindexMisses:        nonNil(s.Meta.IfindexMisses),
			AttributionFallbacks: nonNil(s.Meta.AttributionFallbacks),
			OutcomesRejected:     nonNil(s.Meta.OutcomesRejected),
			BPFEvents:            nonNil(s.Meta.BPFEvents),
			Health:               health,
		},
		Series: make([]DocumentSeries, 0, len(s.Series)),
	}
	for _, ss := range s.Series {
		ds := DocumentSeries{
			SourceTag: ss.SourceTag,
			VIP:       ss.VIP,
			Codes:     make(map[string]CodeStats, len(ss.Codes)),
			Histograms: Histograms{
				RequestDurationSeconds: histogram(ss.Duration),
				RequestSizeBytes:       histogram(ss.RequestSize),
				ResponseSizeBytes:      histogram(ss.ResponseSize),
			},
			Rate: Rate{M1: ss.Rate.M1, M5: ss.Rate.M5, M15: ss.Rate.M15},
		}
		for _, c := range ss.Codes {
			ds.Codes[c.Code] = CodeStats{
				Requests:           c.Requests,
				RequestBytes:       c.RequestBytes,
				ResponseBytes:      c.ResponseBytes,
				DurationSecondsSum: c.DurationSeconds,
			}
		}
		if c := ss.Connections; c != nil {
			ds.Connections = &Connections{Total: c.Total, Active: c.Active}
		}
		if h := ss.Handshakes; h != nil {
			ds.Handshakes = &Handshakes{SynReceived: h.SynReceived, SynackSent: h.SynackSent, SynackWrongEgress: h.SynackWrongEgress}
		}
		if f := ss.InFlight; f != nil {
			ds.RequestsReading, ds.RequestsWriting = &f.Reading, &f.Writing
		}
		ds.Summary = Summarize(ds)
		d.Series = append(d.Series, ds)
	}
	return d
}

func histogram(h collector.Histogram) Histogram {
	out := Histogram{Buckets: make([]Bucket, len(h.Bounds)), Count: h.Count, Sum: h.Sum}
	for i, le := range h.Bounds {
		out.Buckets[i] = Bucket{LE: le, Count: h.Cumulative[i]}
	}
	return out
}

func writeJSON(w io.Writer, d Document) error {
	return json.NewEncoder(w).Encode(d)
}
