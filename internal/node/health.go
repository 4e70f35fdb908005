package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/exporter"
)

// nginxBacklogMetric is read from the registry for meta.health.
const nginxBacklogMetric = "ipng_nginx_backlog_bytes"

// liveHealth reports what the status page and `ipng-stats top` show in
// their health line (the JSON document's meta.health): how connections are
// attributed, the bindings and their current ifindex, and the nginx
// ingest's backlog when reg holds it.
func liveHealth(component, mode string, attr *attribution.Attributor, tags *bindings.Resolver, reg prometheus.Gatherer) func() exporter.Health {
	return func() exporter.Health {
		t := tags.Table()
		h := exporter.Health{Component: component, AttributionMode: mode, BPF: attr.UsesBPF(), Pktinfo: attr.UsesPktinfo(),
			DefaultTag: t.DefaultTag(), Bindings: []exporter.Binding{}}
		for _, b := range t.Bound() {
			h.Bindings = append(h.Bindings, exporter.Binding{Device: b.Binding.Device, Family: b.Binding.Family.String(),
				SourceTag: b.Binding.EffectiveTag(), Ifindex: b.Ifindex, Present: b.Present})
		}
		h.NginxBacklogBytes = gaugeOf(reg, nginxBacklogMetric)
		return h
	}
}

// gaugeOf is the value of the unlabelled gauge name in reg, nil when absent.
func gaugeOf(reg prometheus.Gatherer, name string) *int64 {
	if reg == nil {
		return nil
	}
	mfs, err := reg.Gather()
	if err != nil {
		return nil
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			v := int64(mf.GetMetric()[0].GetGauge().GetValue())
			return &v
		}
	}
	return nil
}
