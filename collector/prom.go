package collector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range families() {
		ch <- c.descs.byName[f.name]
	}
}

// Collect implements prometheus.Collector: it sends every series (no
// filter) as metrics built from one Snapshot. The exporter does not use it
// (it encodes Snapshot.MetricFamilies directly, which skips the registry's
// per-metric hashing); it is there for registries and testutil.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, mf := range c.Snapshot(Filter{}).MetricFamilies() {
		d := c.descs.byName[mf.GetName()]
		for _, m := range mf.Metric {
			ch <- builtMetric{desc: d, m: m}
		}
	}
}

// builtMetric is a prometheus.Metric whose protobuf form is already built.
type builtMetric struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (b builtMetric) Desc() *prometheus.Desc { return b.desc }

func (b builtMetric) Write(out *dto.Metric) error {
	out.Label = b.m.Label
	out.Counter = b.m.Counter
	out.Gauge = b.m.Gauge
	out.Histogram = b.m.Histogram
	return nil
}

// Gatherer returns a prometheus.Gatherer of the series selected by f (meta
// series are always included).
func (c *Collector) Gatherer(f Filter) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		return c.Snapshot(f).MetricFamilies(), nil
	})
}

var _ prometheus.Collector = (*Collector)(nil)

// String describes the collector for logs.
func (c *Collector) String() string {
	return fmt.Sprintf("collector(series=%d/%d, shards=%d)", c.nReal.Load(), c.limit.Load(), c.fixed.Shards)
}
