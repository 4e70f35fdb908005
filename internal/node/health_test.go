package node

import (
	"log/slog"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/exporter"
)

// TestLiveHealth: meta.health from the attributor, the bindings as resolved
// now, and the nginx backlog gauge when the registry has it.
func TestLiveHealth(t *testing.T) {
	tags := bindings.NewResolver(bindings.Spec{DefaultTag: "direct", Bindings: []bindings.Binding{
		{Device: "gre0", Tag: "maglev1"}, {Device: "vlan100", Family: bindings.FamilyIPv6}}}, slog.New(slog.DiscardHandler))
	tags.SetLinks([]bindings.Link{{Index: 7, Name: "gre0"}})
	attr, err := attribution.New(attribution.Options{Mode: attribution.ModeFallback, Bindings: tags})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	health := liveHealth("proxy", "fallback", attr, tags, reg)
	want := exporter.Health{Component: "proxy", AttributionMode: "fallback", Pktinfo: true, DefaultTag: "direct",
		Bindings: []exporter.Binding{
			{Device: "gre0", Family: "any", SourceTag: "maglev1", Ifindex: 7, Present: true},
			{Device: "vlan100", Family: "ipv6", SourceTag: "vlan100"},
		}}
	if got := health(); !reflect.DeepEqual(got, want) {
		t.Errorf("without nginx:\n got %+v\nwant %+v", got, want)
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: nginxBacklogMetric, Help: "test"}, func() float64 { return 4096 }))
	if got := health().NginxBacklogBytes; got == nil || *got != 4096 {
		t.Errorf("nginx backlog %v, want 4096", got)
	}
	tags.SetLinks([]bindings.Link{{Index: 9, Name: "gre0"}}) // the tunnel was re-created
	if got := health().Bindings[0].Ifindex; got != 9 {
		t.Errorf("ifindex after re-creation %d, want 9", got)
	}
}
