package exporter

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func decodeDoc(t *testing.T, resp *http.Response) Document {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body(t, resp))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var d Document
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestJSONFields(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	d := decodeDoc(t, get(t, h, "/.well-known/ipng/statsz?format=json"))

	if d.Schema != 1 {
		t.Errorf("schema = %d", d.Schema)
	}
	m := d.Meta
	if !m.StartedAt.Equal(testStart) || !m.GeneratedAt.Equal(testStart.Add(time.Minute)) || m.UptimeSeconds != 60 {
		t.Errorf("times: started %v generated %v uptime %v", m.StartedAt, m.GeneratedAt, m.UptimeSeconds)
	}
	if m.Build != (Build{Version: "1.2.3", Revision: "abc123", GoVersion: "go1.26"}) {
		t.Errorf("build = %+v", m.Build)
	}
	if m.Series != 3 || m.SeriesLimit != 10000 || m.SeriesOverflow != 0 {
		t.Errorf("series meta = %d/%d overflow %d", m.Series, m.SeriesLimit, m.SeriesOverflow)
	}
	if m.IfindexMisses["ipv4"] != 3 || m.BPFEvents["stamped"] != 42 || m.OutcomesRejected["parse_error"] != 1 ||
		m.AttributionFallbacks == nil || len(m.Filter.SourceTags) != 0 || m.Filter.VIPs == nil {
		t.Errorf("meta counters = %+v", m)
	}

	if len(d.Series) != 3 {
		t.Fatalf("got %d series, want 3", len(d.Series))
	}
	order := []string{"direct/192.0.2.10", "direct/2001:db8::80", "maglev1/192.0.2.10"}
	for i, s := range d.Series {
		if got := s.SourceTag + "/" + s.VIP; got != order[i] {
			t.Errorf("series[%d] = %s, want %s", i, got, order[i])
		}
	}
	s := d.Series[2]
	wantCodes := map[string]CodeStats{
		"2xx": {Requests: 2, RequestBytes: 200, ResponseBytes: 1590, DurationSecondsSum: 0.0027},
		"4xx": {Requests: 1, RequestBytes: 95, ResponseBytes: 512, DurationSecondsSum: 0.04},
		"5xx": {Requests: 1, RequestBytes: 2000, ResponseBytes: 20_000_000, DurationSecondsSum: 12},
	}
	if len(s.Codes) != len(wantCodes) {
		t.Errorf("codes = %+v", s.Codes)
	}
	for k, w := range wantCodes {
		if s.Codes[k] != w {
			t.Errorf("codes[%s] = %+v, want %+v", k, s.Codes[k], w)
		}
	}
	dur := s.Histograms.RequestDurationSeconds
	if len(dur.Buckets) != 13 || dur.Buckets[0] != (Bucket{LE: 0.001, Count: 1}) || dur.Buckets[1] != (Bucket{LE: 0.0025, Count: 2}) ||
		dur.Buckets[12] != (Bucket{LE: 10, Count: 3}) || dur.Count != 4 || dur.Sum != 12.0427 {
		t.Errorf("duration histogram = %+v", dur)
	}
	resp := s.Histograms.ResponseSizeBytes
	if len(resp.Buckets) != 6 || resp.Buckets[0].Count != 1 || resp.Buckets[5] != (Bucket{LE: 1e7, Count: 3}) || resp.Count != 4 || resp.Sum != 20002102 {
		t.Errorf("response size histogram = %+v", resp)
	}
	if req := s.Histograms.RequestSizeBytes; req.Count != 4 || req.Sum != 2295 || req.Buckets[0].Count != 2 {
		t.Errorf("request size histogram = %+v", req)
	}
	if s.Connections == nil || *s.Connections != (Connections{Total: 2, Active: 1}) {
		t.Errorf("connections = %+v", s.Connections)
	}
	if s.RequestsReading != nil || s.RequestsWriting != nil {
		t.Error("maglev1 reports in-flight gauges it never had")
	}
	if s.Rate != (Rate{}) {
		t.Errorf("rate before any tick = %+v", s.Rate)
	}
	v6 := d.Series[1]
	if v6.Connections != nil || v6.RequestsReading == nil || *v6.RequestsReading != 1 || *v6.RequestsWriting != 1 {
		t.Errorf("direct/v6 in-flight = %v %v %v", v6.Connections, v6.RequestsReading, v6.RequestsWriting)
	}
}

func TestJSONGolden(t *testing.T) {
	golden(t, "statsz.json.golden", body(t, get(t, newTestServer(t, nil).Handler(), "/metrics?format=json&source_tag=direct")))
}

func TestJSONNegotiation(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	tests := []struct {
		name, target, accept string
		json                 bool
	}{
		{"accept json", "/metrics", "application/json", true},
		{"accept json preferred", "/metrics", "application/json, text/plain;q=0.5", true},
		{"accept text preferred", "/metrics", "text/plain, application/json;q=0.5", false},
		{"browser", "/metrics", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", false},
		{"wildcard only", "/metrics", "*/*", false},
		{"json q=0", "/metrics", "application/json;q=0", false},
		{"format=json beats accept", "/metrics?format=json", "text/plain", true},
		{"format=prometheus beats accept", "/metrics?format=prometheus", "application/json", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(t, h, tc.target, "Accept", tc.accept)
			isJSON := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
			if isJSON != tc.json {
				t.Errorf("Content-Type %q, want JSON %v", resp.Header.Get("Content-Type"), tc.json)
			}
		})
	}
}

// TestFiltersBothFormats applies the same filters to JSON and text and
// checks they select the same series.
func TestFiltersBothFormats(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"none", "", []string{"direct/192.0.2.10", "direct/2001:db8::80", "maglev1/192.0.2.10"}},
		{"one tag", "source_tag=maglev1", []string{"maglev1/192.0.2.10"}},
		{"two tags", "source_tag=maglev1&source_tag=direct", []string{"direct/192.0.2.10", "direct/2001:db8::80", "maglev1/192.0.2.10"}},
		{"vip", "vip=192.0.2.10", []string{"direct/192.0.2.10", "maglev1/192.0.2.10"}},
		{"v4-mapped vip", "vip=::ffff:192.0.2.10", []string{"direct/192.0.2.10", "maglev1/192.0.2.10"}},
		{"uncompressed v6 vip", "vip=2001:0db8:0000::0080", []string{"direct/2001:db8::80"}},
		{"tag and vip", "source_tag=direct&vip=192.0.2.10", []string{"direct/192.0.2.10"}},
		{"no match", "source_tag=nothere", nil},
		{"other", "vip=other", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := decodeDoc(t, get(t, h, "/metrics?format=json&"+tc.query))
			var got []string
			for _, s := range d.Series {
				got = append(got, s.SourceTag+"/"+s.VIP)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("JSON series %v, want %v", got, tc.want)
			}
			text := string(body(t, get(t, h, "/metrics?"+tc.query)))
			var textGot []string
			for _, w := range []string{"direct/192.0.2.10", "direct/2001:db8::80", "maglev1/192.0.2.10"} {
				tag, vip, _ := strings.Cut(w, "/")
				if strings.Contains(text, `ipng_request_duration_seconds_count{source_tag="`+tag+`",vip="`+vip+`"}`) {
					textGot = append(textGot, w)
				}
			}
			if strings.Join(textGot, " ") != strings.Join(tc.want, " ") {
				t.Errorf("text series %v, want %v", textGot, tc.want)
			}
			if !strings.Contains(text, "ipng_build_info{") {
				t.Error("meta series missing from filtered text")
			}
		})
	}
}
