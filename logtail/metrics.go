package logtail

import "github.com/prometheus/client_golang/prometheus"

// Metrics exports Counters as
//
//	ipng_logtail_lines_sent_total{source}
//	ipng_logtail_lines_dropped_total{source, reason="queue_full"|"send_error"}
//
// source names the sender ("nginx", "proxy") and is a constant label, so
// the two owners may register their Metrics in one registry. Call Describe
// and Collect from the owner's prometheus.Collector.
type Metrics struct {
	sent, dropped *prometheus.Desc
	c             *Counters
}

// NewMetrics describes c's counters for source.
func NewMetrics(source string, c *Counters) *Metrics {
	l := prometheus.Labels{"source": source}
	return &Metrics{
		sent: prometheus.NewDesc("ipng_logtail_lines_sent_total",
			"Access-log lines sent to the UDP logtail target (in datagrams the kernel accepted).", nil, l),
		dropped: prometheus.NewDesc("ipng_logtail_lines_dropped_total",
			"Access-log lines not sent to the logtail target: the sender was behind (queue_full) or the write failed (send_error).",
			[]string{"reason"}, l),
		c: c,
	}
}

// Describe sends the descriptors.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.sent
	ch <- m.dropped
}

// Collect sends the current values.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(m.sent, prometheus.CounterValue, float64(m.c.Sent.Load()))
	ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(m.c.QueueFull.Load()), "queue_full")
	ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(m.c.SendErrors.Load()), "send_error")
}
