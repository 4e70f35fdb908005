package exporter

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/ipng/ipng-stats/collector"
)

func TestPrometheusGolden(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	tests := []struct {
		name, target, accept, golden, contentType string
	}{
		{"default text", "/metrics", "", "metrics.golden", "text/plain; version=0.0.4"},
		{"statsz is the same", "/.well-known/ipng/statsz", "", "metrics.golden", "text/plain; version=0.0.4"},
		{"prometheus 3 accept", "/metrics", "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.1", "metrics.openmetrics.golden", "application/openmetrics-text; version=1.0.0"},
		{"format=openmetrics", "/metrics?format=openmetrics", "", "metrics.openmetrics.golden", "application/openmetrics-text; version=1.0.0"},
		{"format=text beats accept", "/metrics?format=text", "application/json", "metrics.golden", "text/plain; version=0.0.4"},
		{"filtered", "/metrics?source_tag=direct&vip=2001:db8::80", "", "metrics.filtered.golden", "text/plain; version=0.0.4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(t, h, tc.target, "Accept", tc.accept)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body(t, resp))
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("Content-Type %q, want prefix %q", ct, tc.contentType)
			}
			golden(t, tc.golden, body(t, resp))
		})
	}
}

// TestGatherAndCompare checks the served text against the collector's own
// prometheus.Collector path through client_golang's comparison.
func TestGatherAndCompare(t *testing.T) {
	c := newTestCollector(t, collector.Config{})
	populate(c)
	s, err := New(Options{Collector: c})
	if err != nil {
		t.Fatal(err)
	}
	served := body(t, get(t, s.Handler(), "/metrics"))
	// The exporter's own series (connections) are not the collector's.
	var rest bytes.Buffer
	for line := range bytes.Lines(served) {
		if !bytes.Contains(line, []byte("ipng_exporter_")) {
			rest.Write(line)
		}
	}
	if err := testutil.CollectAndCompare(c, &rest); err != nil {
		t.Error(err)
	}
}

func TestProtobuf(t *testing.T) {
	c := newTestCollector(t, collector.Config{NativeHistograms: true})
	populate(c)
	s, err := New(Options{Collector: c})
	if err != nil {
		t.Fatal(err)
	}
	resp := get(t, s.Handler(), "/metrics?vip=192.0.2.10", "Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() != expfmt.TypeProtoDelim {
		t.Fatalf("Content-Type %q is not delimited protobuf", resp.Header.Get("Content-Type"))
	}
	dec := expfmt.NewDecoder(resp.Body, format)
	got := map[string]*dto.MetricFamily{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got[mf.GetName()] = &mf
	}
	dur := got["ipng_request_duration_seconds"]
	if dur == nil || len(dur.Metric) != 2 {
		t.Fatalf("duration family = %v", dur)
	}
	for _, m := range dur.Metric {
		if h := m.GetHistogram(); h.GetSchema() != 3 || len(h.GetBucket()) != 13 || len(h.GetPositiveSpan()) == 0 {
			t.Errorf("histogram lacks classic or native buckets: %v", h)
		}
	}
	if reqs := got["ipng_requests_total"]; reqs == nil || len(reqs.Metric) != 4 {
		t.Errorf("requests family = %v, want 3 classes for maglev1 and 1 for direct", reqs)
	}
}

func TestExtraRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "aaa_extra", Help: "extra"})
	g.Set(7)
	reg.MustRegister(g)
	out := string(body(t, get(t, newTestServer(t, reg).Handler(), "/metrics?source_tag=none")))
	if !strings.HasPrefix(out, "# HELP aaa_extra extra") || !strings.Contains(out, "aaa_extra 7") {
		t.Errorf("extra registry not served first:\n%s", out)
	}
	if strings.Contains(out, "source_tag=") {
		t.Errorf("filter source_tag=none let series through:\n%s", out)
	}

	// The collector registered twice is a 500 naming the family.
	c := newTestCollector(t, collector.Config{})
	dup := prometheus.NewRegistry()
	dup.MustRegister(c)
	s, err := New(Options{Collector: c, Registry: dup})
	if err != nil {
		t.Fatal(err)
	}
	resp := get(t, s.Handler(), "/metrics")
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body(t, resp)), "exported twice") {
		t.Errorf("duplicate families: status %d", resp.StatusCode)
	}
}

func TestRoutes(t *testing.T) {
	ready := errors.New("bindings not loaded")
	c := newTestCollector(t, collector.Config{})
	s, err := New(Options{Collector: c, Ready: func() error { return ready }})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	tests := []struct {
		method, target string
		want           int
		contains       string
	}{
		{"GET", "/", 200, `href="/.well-known/ipng/statsz"`},
		{"GET", "/", 200, `href="/metrics"`},
		{"GET", "/-/healthy", 200, "Healthy"},
		{"GET", "/-/ready", 503, "bindings not loaded"},
		{"HEAD", "/metrics", 200, ""},
		{"POST", "/metrics", 405, ""},
		{"GET", "/nope", 404, ""},
		{"GET", "/metrics/", 404, ""},
		{"GET", "/metrics?foo=1", 400, `unknown query parameter "foo"`},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.target, nil)
			rec := &recorder{header: http.Header{}}
			h.ServeHTTP(rec, req)
			if rec.status == 0 {
				rec.status = http.StatusOK // nothing written: net/http sends 200
			}
			if rec.status != tc.want || !strings.Contains(rec.body.String(), tc.contains) {
				t.Errorf("status %d body %q, want %d containing %q", rec.status, rec.body.String(), tc.want, tc.contains)
			}
		})
	}
	ready = nil
	if resp := get(t, h, "/-/ready"); resp.StatusCode != 200 {
		t.Errorf("/-/ready = %d once ready", resp.StatusCode)
	}
}

// recorder is a minimal ResponseWriter (httptest.ResponseRecorder rejects HEAD bodies differently).
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}

func TestGzip(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	plain := body(t, get(t, h, "/metrics"))
	resp := get(t, h, "/metrics", "Accept-Encoding", "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, unzipped) {
		t.Error("gzip body differs from plain body")
	}
	for _, ae := range []string{"gzip;q=0", "gzip; q=0.0", "identity", "br, deflate"} {
		if resp := get(t, h, "/metrics", "Accept-Encoding", ae); resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("Accept-Encoding %q was compressed", ae)
		}
	}
	if resp := get(t, h, "/metrics", "Accept-Encoding", "br;q=1.0, GZIP;q=0.5"); resp.Header.Get("Content-Encoding") != "gzip" {
		t.Error("Accept-Encoding with gzip;q=0.5 was not compressed")
	}
}

// TestZstdAndJSONCompression: zstd is offered next to gzip, and the
// JSON document is gzipped too.
func TestZstdAndJSONCompression(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	plain := body(t, get(t, h, "/metrics?source_tag=maglev1"))
	resp := get(t, h, "/metrics?source_tag=maglev1", "Accept-Encoding", "zstd")
	if ce := resp.Header.Get("Content-Encoding"); ce != "zstd" {
		t.Fatalf("Content-Encoding %q, want zstd", ce)
	}
	if v := resp.Header.Values("Vary"); !slices.Contains(v, "Accept-Encoding") {
		t.Errorf("Vary %q lacks Accept-Encoding", v)
	}
	zr, err := zstd.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if unzipped, err := io.ReadAll(zr); err != nil || !bytes.Equal(plain, unzipped) {
		t.Errorf("zstd body differs from plain body (%v)", err)
	}

	plainJSON := body(t, get(t, h, "/metrics?format=json"))
	resp = get(t, h, "/metrics?format=json", "Accept-Encoding", "gzip")
	if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Fatalf("JSON Content-Encoding %q, want gzip", ce)
	}
	gr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(gr)
	if err != nil {
		t.Fatal(err)
	}
	// generated_at and rates differ between the two documents; counters do not.
	var a, b Document
	if err := json.Unmarshal(plainJSON, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(unzipped, &b); err != nil {
		t.Fatalf("gzipped JSON: %v", err)
	}
	codes := func(d Document) map[string]map[string]CodeStats {
		m := map[string]map[string]CodeStats{}
		for _, s := range d.Series {
			m[s.SourceTag+" "+s.VIP] = s.Codes
		}
		return m
	}
	if len(a.Series) == 0 || !reflect.DeepEqual(codes(a), codes(b)) {
		t.Errorf("gzipped JSON series %v, want %v", codes(b), codes(a))
	}
}

func TestNewErrors(t *testing.T) {
	c := newTestCollector(t, collector.Config{})
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no collector", Options{}, "collector is required"},
		{"bad address", Options{Collector: c, ListenAddress: "9113"}, "listen address"},
		{"missing web config", Options{Collector: c, WebConfigFile: "/nonexistent/web.yml"}, "web config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}
