package handshake

import "github.com/prometheus/client_golang/prometheus"

var (
	descDevices = prometheus.NewDesc("ipng_tcp_handshake_devices",
		"Bound devices the handshake tc programs are attached to, by mode (tcx, or tc: a clsact qdisc filter).",
		[]string{"mode"}, nil)
	descMapFull = prometheus.NewDesc("ipng_tcp_handshake_map_full_total",
		"Packets the handshake programs could not count because their map was full.", nil, nil)
	descNotLocal = prometheus.NewDesc("ipng_tcp_handshake_syn_not_local_total",
		"SYNs counted on bound devices to an address that is not local and has no series: in the diagnosis, not in ipng_tcp_syn_received_total.", nil, nil)
	descPortsDropped = prometheus.NewDesc("ipng_tcp_handshake_ports_dropped",
		"Listening ports whose handshakes are not counted because the port map is full (1024 ports), at the last scan.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDevices
	ch <- descMapFull
	ch <- descPortsDropped
	ch <- descNotLocal
}

// Collect implements prometheus.Collector.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	modes := map[string]int{"tcx": 0, "tc": 0}
	for _, mode := range m.Attached() {
		modes[mode]++
	}
	for mode, n := range modes {
		ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(n), mode)
	}
	ch <- prometheus.MustNewConstMetric(descMapFull, prometheus.CounterValue, float64(m.MapFull()))
	ch <- prometheus.MustNewConstMetric(descPortsDropped, prometheus.GaugeValue, float64(m.PortsDropped()))
	ch <- prometheus.MustNewConstMetric(descNotLocal, prometheus.CounterValue, float64(m.NotLocal()))
}
