package top

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/status"
)

// SortKey orders the rows; each has a key in the UI.
type SortKey int

const (
	SortRate     SortKey = iota // 1-minute request rate, highest first
	SortRequests                // requests since start, most first
	SortLatency                 // p99, slowest first
	SortErrors                  // 5xx share, highest first
	SortTag                     // source tag, then VIP
)

var sortNames = [...]string{"rate", "requests", "p99", "5xx", "tag"}

func (k SortKey) String() string { return sortNames[k] }

// View says how rows are built.
type View struct {
	Sort   SortKey
	PerTag bool   // one row per source tag instead of per (tag, VIP)
	Filter string // substring of tag or VIP, case-insensitive
}

// Rows builds the sorted, filtered rows of d.
func Rows(d *exporter.Document, v View) []status.Row {
	series := d.Series
	if v.PerTag {
		series = byTag(series)
	}
	var rows []status.Row
	for _, s := range series {
		if status.Matches(s.SourceTag, s.VIP, v.Filter) {
			rows = append(rows, status.NewRow(s))
		}
	}
	slices.SortStableFunc(rows, func(a, b status.Row) int {
		var c int
		switch v.Sort {
		case SortRate:
			c = cmp.Compare(b.M1, a.M1)
		case SortRequests:
			c = cmp.Compare(b.Requests, a.Requests)
		case SortLatency:
			c = cmp.Compare(orZero(b.LatencyP99Sec), orZero(a.LatencyP99Sec))
		case SortErrors:
			c = cmp.Compare(b.Shares["5xx"], a.Shares["5xx"])
		}
		if c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Tag, b.Tag), cmp.Compare(a.VIP, b.VIP))
	})
	return rows
}

func orZero(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// byTag folds the series of each tag into one: counters, histograms, rates
// and connections added up; the VIP column says how many VIPs.
func byTag(series []exporter.DocumentSeries) []exporter.DocumentSeries {
	var out []exporter.DocumentSeries
	index := map[string]int{}
	vips := map[string]int{}
	for _, s := range series {
		i, ok := index[s.SourceTag]
		if !ok {
			i = len(out)
			index[s.SourceTag] = i
			out = append(out, exporter.DocumentSeries{SourceTag: s.SourceTag, Codes: map[string]exporter.CodeStats{}})
		}
		t := &out[i]
		vips[s.SourceTag]++
		for code, c := range s.Codes {
			a := t.Codes[code]
			a.Requests += c.Requests
			a.RequestBytes += c.RequestBytes
			a.ResponseBytes += c.ResponseBytes
			a.DurationSecondsSum += c.DurationSecondsSum
			t.Codes[code] = a
		}
		t.Histograms.RequestDurationSeconds.Merge(s.Histograms.RequestDurationSeconds)
		t.Rate.M1 += s.Rate.M1
		t.Rate.M5 += s.Rate.M5
		t.Rate.M15 += s.Rate.M15
		if c := s.Connections; c != nil {
			if t.Connections == nil {
				t.Connections = &exporter.Connections{}
			}
			t.Connections.Total += c.Total
			t.Connections.Active += c.Active
		}
	}
	for i := range out {
		n := vips[out[i].SourceTag]
		out[i].VIP = strconv.Itoa(n) + " VIP"
		if n > 1 {
			out[i].VIP += "s"
		}
		out[i].Summary = exporter.Summarize(out[i])
	}
	return out
}

// ParseSort accepts the names of the sort keys (rate, requests, p99, 5xx, tag).
func ParseSort(s string) (SortKey, error) {
	for i, n := range sortNames {
		if n == s {
			return SortKey(i), nil
		}
	}
	return 0, fmt.Errorf("unknown sort key %q (want %s)", s, strings.Join(sortNames[:], ", "))
}
