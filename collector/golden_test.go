package collector

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

func TestExpositionGolden(t *testing.T) {
	c, _ := newTestCollector(t, Config{MaxSeries: 100})
	populate(c)
	mfs := c.Snapshot(Filter{}).MetricFamilies()
	golden(t, "exposition.golden", encode(t, mfs, expfmt.NewFormat(expfmt.TypeTextPlain)))
	golden(t, "exposition.openmetrics.golden", encode(t, mfs, expfmt.FmtOpenMetrics_1_0_0))
}

// TestCollectMatchesGolden checks that the prometheus.Collector path (a
// pedantic registry, with its consistency checks) yields the same
// exposition as the direct MetricFamilies path.
func TestCollectMatchesGolden(t *testing.T) {
	c, _ := newTestCollector(t, Config{MaxSeries: 100})
	populate(c)
	want, err := os.ReadFile(filepath.Join("testdata", "exposition.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(c, bytes.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestLint(t *testing.T) {
	c, _ := newTestCollector(t, Config{MaxSeries: 100})
	populate(c)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestFilteredExposition(t *testing.T) {
	c, _ := newTestCollector(t, Config{MaxSeries: 100})
	populate(c)
	tests := []struct {
		name     string
		f        Filter
		want     []string
		wantNone []string
	}{
		{"tag", Filter{SourceTags: []string{"direct"}}, []string{`source_tag="direct"`}, []string{`source_tag="maglev1"`}},
		{"vip", Filter{VIPs: []string{"192.0.2.10"}}, []string{`vip="192.0.2.10"`}, []string{`vip="2001:db8::80"`}},
		{"both no match", Filter{SourceTags: []string{"direct"}, VIPs: []string{"192.0.2.10"}}, []string{"ipng_build_info"}, []string{"source_tag="}},
		{"two tags", Filter{SourceTags: []string{"direct", "maglev1"}}, []string{`source_tag="direct"`, `source_tag="maglev1"`}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := string(encode(t, c.Snapshot(tc.f).MetricFamilies(), expfmt.NewFormat(expfmt.TypeTextPlain)))
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			for _, w := range tc.wantNone {
				if strings.Contains(out, w) {
					t.Errorf("output contains %q", w)
				}
			}
		})
	}
}
