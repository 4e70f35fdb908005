package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	upDesc = prometheus.NewDesc("ipng_proxy_upstream_up",
		"Whether the proxy sends requests to an upstream server (1) or has taken it out after failures or a failed health check (0).",
		[]string{"upstream", "server"}, nil)
	activeDesc = prometheus.NewDesc("ipng_proxy_upstream_requests_active",
		"Requests the proxy has in progress on an upstream server.", []string{"upstream", "server"}, nil)
	idleClosedDesc = prometheus.NewDesc("ipng_proxy_connections_idle_closed_total",
		"Client connections the proxy closed because they sent no request byte within timeouts.read_header, on TLS listeners also those that did not complete the TLS handshake within it or did not speak TLS (no request, so in no per-tag series).",
		nil, nil)
	connRejectedDesc = prometheus.NewDesc("ipng_proxy_connections_rejected_total",
		"Client connections the proxy closed at proxy.max_connections: evicted (sent no byte yet, closed to make room for a new one), over_limit (the new one, when every open connection had sent something).",
		[]string{"reason"}, nil)
	connOpenDesc = prometheus.NewDesc("ipng_proxy_connections_open",
		"Client connections the proxy holds open (bounded by proxy.max_connections).", nil, nil)
)

// Describe implements prometheus.Collector: register the Proxy in the
// registry the exporter serves next to the collector's series.
func (p *Proxy) Describe(ch chan<- *prometheus.Desc) {
	ch <- upDesc
	ch <- activeDesc
	ch <- idleClosedDesc
	ch <- connRejectedDesc
	ch <- connOpenDesc
	p.tailMetrics.Describe(ch)
}

// Collect implements prometheus.Collector.
func (p *Proxy) Collect(ch chan<- prometheus.Metric) {
	now := time.Now().UnixNano()
	p.mu.Lock()
	for name, pl := range p.pools {
		for _, b := range pl.backends {
			up := 0.0
			if len(pl.backends) == 1 && !b.hcDown.Load() || b.alive(now) {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up, name, b.addr)
			ch <- prometheus.MustNewConstMetric(activeDesc, prometheus.GaugeValue, float64(b.active.Load()), name, b.addr)
		}
	}
	p.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(idleClosedDesc, prometheus.CounterValue, float64(p.idleClosed.Load()))
	ch <- prometheus.MustNewConstMetric(connRejectedDesc, prometheus.CounterValue, float64(p.limit.evicted.Load()), "evicted")
	ch <- prometheus.MustNewConstMetric(connRejectedDesc, prometheus.CounterValue, float64(p.limit.overLimit.Load()), "over_limit")
	ch <- prometheus.MustNewConstMetric(connOpenDesc, prometheus.GaugeValue, float64(p.limit.openNow()))
	p.tailMetrics.Collect(ch)
}
