package collector

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
)

// TestHandshakes: handshake stages added to a series appear in the snapshot
// and as three counters; series without them show none.
func TestHandshakes(t *testing.T) {
	c, _ := newTestCollector(t, Config{})
	vip := netip.MustParseAddr("192.0.2.10")
	c.Series("maglev", vip).AddHandshakes(5, 4, 1)
	c.Series("maglev", vip).AddHandshakes(1, 1, 0) // another shard
	c.Series("tag1", vip).AddConns(1, 0)
	s := c.Snapshot(Filter{})
	for _, ss := range s.Series {
		switch ss.SourceTag {
		case "maglev":
			if ss.Handshakes == nil || *ss.Handshakes != (Handshakes{6, 5, 1}) {
				t.Errorf("maglev handshakes %+v, want {6 5 1}", ss.Handshakes)
			}
		case "tag1":
			if ss.Handshakes != nil {
				t.Errorf("tag1 has handshakes %+v, none were added", ss.Handshakes)
			}
		}
	}
	text := string(encode(t, s.MetricFamilies(), expfmt.NewFormat(expfmt.TypeTextPlain)))
	for _, want := range []string{
		"# TYPE ipng_tcp_syn_received_total counter",
		`ipng_tcp_syn_received_total{source_tag="maglev",vip="192.0.2.10"} 6`,
		`ipng_tcp_synack_sent_total{source_tag="maglev",vip="192.0.2.10"} 5`,
		`ipng_tcp_synack_wrong_egress_total{source_tag="maglev",vip="192.0.2.10"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, `ipng_tcp_syn_received_total{source_tag="tag1"`) {
		t.Error("a series without handshakes exposes handshake counters")
	}
	// A rejected tag counts nothing and does not panic.
	c.Series("bad tag", vip).AddHandshakes(1, 1, 1)
}

func TestHasSeries(t *testing.T) {
	c, _ := newTestCollector(t, Config{})
	vip := netip.MustParseAddr("192.0.2.10")
	if c.HasSeries("maglev", vip) {
		t.Error("HasSeries before any series")
	}
	c.Series("maglev", netip.MustParseAddr("::ffff:192.0.2.10"))
	if !c.HasSeries("maglev", vip) || c.HasSeries("other-tag", vip) {
		t.Error("HasSeries does not find the series it created (v4-mapped), or finds another tag's")
	}
	if s := c.Snapshot(Filter{}); len(s.Series) != 1 {
		t.Errorf("HasSeries created series: %d", len(s.Series))
	}
}
