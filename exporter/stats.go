package exporter

import (
	"compress/gzip"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/klauspost/compress/gzhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/ipng/ipng-stats/collector"
)

// compress is the content-encoding layer of the stats paths: gzip (at
// BestSpeed) or zstd as the client's Accept-Encoding asks. promhttp's own
// compression is off because its gzip level is fixed at the default, which
// made a 10k-series gzip scrape 2.7 times slower (docs/benchmarks.md).
func compress(h http.Handler) (http.Handler, error) {
	wrap, err := gzhttp.NewWrapper(gzhttp.CompressionLevel(gzip.BestSpeed))
	if err != nil {
		return nil, fmt.Errorf("exporter: compression: %w", err)
	}
	return wrap(h), nil
}

// serveStats answers /metrics and /.well-known/ipng/statsz: the JSON
// document, or the Prometheus formats through promhttp, which negotiates the
// format from Accept.
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if wantJSON(q, r.Header) {
		w.Header().Add("Vary", "Accept")
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		if err := writeJSON(w, s.Document(q.filter)); err != nil {
			s.log.Debug("writing response failed", "path", r.URL.Path, "err", err)
		}
		return
	}
	if accept := forcedAccept(q.format); accept != "" {
		// ?format= beats Accept: promhttp negotiates from a copy of the
		// request that asks for that format only.
		fr := *r
		fr.Header = r.Header.Clone()
		fr.Header.Set("Accept", accept)
		r = &fr
	}
	h := s.promAll
	if len(q.filter.SourceTags) > 0 || len(q.filter.VIPs) > 0 {
		// As node_exporter does for ?collect[]=: a handler per filtered
		// request, over a gatherer that applies the filter.
		h = s.promHandler(q.filter)
	}
	h.ServeHTTP(w, r)
}

// forcedAccept is the Accept header that makes promhttp pick the format
// ?format= names; "" leaves the client's Accept alone.
func forcedAccept(format string) string {
	switch format {
	case formatText:
		return string(expfmt.NewFormat(expfmt.TypeTextPlain))
	case formatOpenMetrics:
		return string(expfmt.FmtOpenMetrics_1_0_0)
	}
	return ""
}

// promHandler serves the collector's series matching f, then the extra
// registry's, in the Prometheus formats, uncompressed (see compress).
func (s *Server) promHandler(f collector.Filter) http.Handler {
	return promhttp.HandlerFor(&gatherer{s: s, filter: f}, promhttp.HandlerOpts{
		// promhttp logs a failed write to a client that went away: client
		// noise. Gathering errors are logged by gatherer.
		ErrorLog:           slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ErrorHandling:      promhttp.HTTPErrorOnError,
		EnableOpenMetrics:  true,
		DisableCompression: true,
	})
}

// gatherer is the exporter's prometheus.Gatherer: the collector's snapshot,
// already built as sorted metric families, merged with Options.Registry.
// Unlike a prometheus.Registry (or prometheus.Gatherers) holding the
// collector, it does not hash and check every series on every scrape; the
// collector's families are consistent by construction.
type gatherer struct {
	s      *Server
	filter collector.Filter
}

// Gather implements prometheus.Gatherer.
func (g *gatherer) Gather() ([]*dto.MetricFamily, error) {
	snap := g.s.opts.Collector.Snapshot(g.filter)
	mfs := snap.MetricFamilies()
	own, err := g.s.own.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering the exporter's series: %w", err)
	}
	if mfs, err = merge(mfs, own); err != nil {
		return nil, err
	}
	if g.s.opts.Registry == nil {
		return mfs, nil
	}
	extra, err := g.s.opts.Registry.Gather()
	if err != nil {
		g.s.log.Error("gathering extra collectors failed", "err", err)
		return nil, fmt.Errorf("gathering extra collectors: %w", err)
	}
	mfs, err = merge(mfs, extra)
	if err != nil {
		g.s.log.Error("merging metric families failed", "err", err)
		return nil, err
	}
	return mfs, nil
}

var _ prometheus.Gatherer = (*gatherer)(nil)

// merge combines the collector's families with the extra registry's, sorted
// by name. Both lists are sorted; a name in both is an error (the collector
// was registered in the extra registry too).
func merge(a, b []*dto.MetricFamily) ([]*dto.MetricFamily, error) {
	out := make([]*dto.MetricFamily, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	slices.SortStableFunc(out, func(x, y *dto.MetricFamily) int { return strings.Compare(x.GetName(), y.GetName()) })
	for i := 1; i < len(out); i++ {
		if out[i].GetName() == out[i-1].GetName() {
			return nil, fmt.Errorf("metric family %s is exported twice (is the collector also in Options.Registry?)", out[i].GetName())
		}
	}
	return out, nil
}
