package exporter

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// serveStats answers /metrics and /.well-known/ipng/statsz.
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Add("Vary", "Accept, Accept-Encoding")
	if wantJSON(q, r.Header) {
		d := s.Document(q.filter)
		s.respond(w, r, "application/json; charset=utf-8", func(out io.Writer) error {
			return writeJSON(out, d)
		})
		return
	}
	snap := s.opts.Collector.Snapshot(q.filter)
	mfs := snap.MetricFamilies()
	if s.opts.Registry != nil {
		extra, err := s.opts.Registry.Gather()
		if err != nil {
			s.log.Error("gathering extra collectors failed", "err", err)
			http.Error(w, "gathering metrics failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		if mfs, err = merge(mfs, extra); err != nil {
			s.log.Error("merging metric families failed", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	format := promFormat(q, r.Header)
	s.respond(w, r, string(format), func(out io.Writer) error {
		enc := expfmt.NewEncoder(out, format)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				return fmt.Errorf("encoding %s: %w", mf.GetName(), err)
			}
		}
		if c, ok := enc.(expfmt.Closer); ok {
			return c.Close()
		}
		return nil
	})
}

// respond writes the body produced by write, gzip-compressed if the client
// accepts it. An encoding error after the first byte can only be logged.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, contentType string, write func(io.Writer) error) {
	w.Header().Set("Content-Type", contentType)
	var out io.Writer = w
	var gz *gzip.Writer
	if acceptsGzip(r.Header) {
		w.Header().Set("Content-Encoding", "gzip")
		gz, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		out = gz
	}
	if r.Method == http.MethodHead {
		return
	}
	bw := bufio.NewWriterSize(out, 32<<10)
	err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil && gz != nil {
		err = gz.Close()
	}
	if err != nil && !errors.Is(err, http.ErrHandlerTimeout) {
		s.log.Warn("writing response failed", "path", r.URL.Path, "err", err)
	}
}

// acceptsGzip reports whether Accept-Encoding lists gzip with a q above 0.
func acceptsGzip(h http.Header) bool {
	for _, part := range strings.Split(strings.Join(h.Values("Accept-Encoding"), ","), ",") {
		enc, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(enc), "gzip") {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && k == "q" {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		return q > 0
	}
	return false
}

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
