package status

import (
	"slices"
	"strings"
	"time"

	"github.com/ipng/ipng-stats/exporter"
)

// Classes are the code-class columns, in order.
var Classes = []string{"2xx", "3xx", "4xx", "5xx", "other"}

// view is what the template renders.
type view struct {
	Host      string
	Filter    string
	JSONURL   string
	Interval  int64
	Generated string
	Health    []Fact
	Bindings  []exporter.Binding
	Classes   []string
	Rows      []Row
	Total     int // series before filtering
}

// Fact is one item of the health header; Warn marks what needs attention.
type Fact struct {
	Name, Value string
	Warn        bool
}

// Row is one (source tag, VIP) line of the table.
type Row struct {
	Tag, VIP      string
	Requests      uint64
	M1, M5, M15   float64
	Share         []string // per Classes
	P50, P99      string
	In, Out       float64
	Active        int64
	HasActive     bool
	Shares        map[string]float64
	LatencyP50Sec *float64
	LatencyP99Sec *float64
}

// NewRow is the row of one document series.
func NewRow(s exporter.DocumentSeries) Row {
	sum := s.Summary
	r := Row{Tag: s.SourceTag, VIP: s.VIP, Requests: sum.Requests, M1: s.Rate.M1, M5: s.Rate.M5, M15: s.Rate.M15,
		In: sum.RequestBytesPerSecond, Out: sum.ResponseBytesPerSecond, Shares: ClassShares(sum.Share),
		LatencyP50Sec: sum.LatencyP50Seconds, LatencyP99Sec: sum.LatencyP99Seconds}
	r.P50, r.P99 = FormatSeconds(sum.LatencyP50Seconds), FormatSeconds(sum.LatencyP99Seconds)
	for _, c := range Classes {
		v, ok := r.Shares[c]
		r.Share = append(r.Share, FormatShare(v, ok))
	}
	if s.Connections != nil {
		r.Active, r.HasActive = s.Connections.Active, true
	}
	return r
}

// ClassShares folds the classes of a summary into Classes: 1xx and
// "unknown" count as "other".
func ClassShares(share map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(share))
	for c, v := range share {
		if !slices.Contains(Classes, c) {
			c = "other"
		}
		out[c] += v
	}
	return out
}

// Matches reports whether the row's tag or VIP contains filter
// (case-insensitive); an empty filter matches everything.
func Matches(tag, vip, filter string) bool {
	f := strings.ToLower(filter)
	return f == "" || strings.Contains(strings.ToLower(tag), f) || strings.Contains(strings.ToLower(vip), f)
}

func newView(d exporter.Document, filter, host string) view {
	v := view{Host: host, Filter: filter, Classes: Classes, Total: len(d.Series),
		Generated: d.Meta.GeneratedAt.UTC().Format(time.TimeOnly) + " UTC", Health: HealthFacts(d)}
	for _, s := range d.Series {
		if Matches(s.SourceTag, s.VIP, filter) {
			v.Rows = append(v.Rows, NewRow(s))
		}
	}
	if h := d.Meta.Health; h != nil {
		v.Bindings = h.Bindings
	}
	return v
}

// HealthFacts are the items of the health header, in order.
func HealthFacts(d exporter.Document) []Fact {
	m := d.Meta
	facts := []Fact{{Name: "version", Value: m.Build.Version}, {Name: "uptime", Value: FormatUptime(m.UptimeSeconds)}}
	if h := m.Health; h != nil {
		bpf := "not attached"
		if h.BPF {
			bpf = "attached"
		}
		facts = append(facts, Fact{Name: "component", Value: h.Component},
			Fact{Name: "BPF", Value: bpf, Warn: !h.BPF && h.AttributionMode != "fallback"},
			Fact{Name: "attribution", Value: attributionText(*h)})
		if h.NginxBacklogBytes != nil {
			facts = append(facts, Fact{Name: "nginx backlog", Value: FormatBytes(float64(*h.NginxBacklogBytes)), Warn: *h.NginxBacklogBytes > 1<<20})
		}
	}
	misses, fallbacks := Total(m.IfindexMisses), Total(m.AttributionFallbacks)
	facts = append(facts,
		Fact{Name: "ifindex misses", Value: formatCount(misses)},
		Fact{Name: "fallbacks", Value: formatCount(fallbacks)},
		Fact{Name: "series", Value: formatCount(uint64(m.Series)) + " / " + formatCount(uint64(m.SeriesLimit)),
			Warn: m.SeriesLimit > 0 && m.Series*10 >= m.SeriesLimit*9 || m.SeriesOverflow > 0})
	return facts
}

func attributionText(h exporter.Health) string {
	var methods []string
	if h.BPF {
		methods = append(methods, "bpf")
	}
	if h.Pktinfo {
		methods = append(methods, "pktinfo")
	}
	if len(methods) == 0 {
		methods = append(methods, "none")
	}
	return h.AttributionMode + " (" + strings.Join(methods, "+") + ")"
}

// Total adds up a map of counters (misses per family, fallbacks per reason).
func Total(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}
