package nginxlog

import "github.com/prometheus/client_golang/prometheus"

// descs describe the ingest's own series.
type descs struct {
	lines, bytes, recorded, rejected, misses, full, lost, fullSecs, reopens, backlog *prometheus.Desc
}

func newDescs() *descs {
	return &descs{
		lines:    prometheus.NewDesc("ipng_nginx_lines_total", "Access-log lines read from the nginx spool file, recorded or rejected.", nil, nil),
		bytes:    prometheus.NewDesc("ipng_nginx_bytes_total", "Bytes of access-log lines read, newlines included.", nil, nil),
		recorded: prometheus.NewDesc("ipng_nginx_lines_recorded_total", "Access-log lines recorded as requests.", nil, nil),
		rejected: prometheus.NewDesc("ipng_nginx_lines_rejected_total", "Access-log lines rejected; by reason in ipng_outcomes_rejected_total{reason=~\"nginx_.*\"}.", nil, nil),
		misses:   prometheus.NewDesc("ipng_nginx_tuple_misses_total", "Recorded lines whose connection was not found among the stamps of the ring for the ingest (default tag); by reason in ipng_attribution_fallbacks_total{reason=~\"nginx_.*\"}.", nil, nil),
		full:     prometheus.NewDesc("ipng_nginx_spool_full_total", "Times the spool filesystem was found full: nginx could not write lines.", nil, nil),
		lost: prometheus.NewDesc("ipng_nginx_lines_lost_estimated_total", "Access-log lines nginx could not write to the full spool, estimated on nginx's own clock ($msec of the lines that arrived) "+
			"when the episode ends: the rate before the newest line written before the fill, times the time from that line to the first check that found room, minus the lines that arrived for that time; "+
			"overcounts when traffic fell while the spool was full, undercounts when it rose (docs/metrics.md).", nil, nil),
		fullSecs: prometheus.NewDesc("ipng_nginx_spool_full_seconds_total", "Seconds the agent saw the spool full (from the first check that found it full to the first that found room), summed over episodes; a lower bound of the time nginx could not write.", nil, nil),
		reopens:  prometheus.NewDesc("ipng_nginx_log_reopens_total", "Times a new log file appeared at the path (rotation or re-creation).", []string{"kind"}, nil),
		backlog:  prometheus.NewDesc("ipng_nginx_backlog_bytes", "Bytes nginx has written to the spool that are not read yet.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (in *Ingest) Describe(ch chan<- *prometheus.Desc) {
	d := in.descs
	for _, d := range []*prometheus.Desc{d.lines, d.bytes, d.recorded, d.rejected, d.misses, d.full, d.lost, d.fullSecs,
		d.reopens, d.backlog} {
		ch <- d
	}
	in.tailMetrics.Describe(ch)
}

// Collect implements prometheus.Collector.
func (in *Ingest) Collect(ch chan<- prometheus.Metric) {
	s, d := in.Stats(), in.descs
	c := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	c(d.lines, s.Lines)
	c(d.bytes, s.Bytes)
	c(d.recorded, s.Recorded)
	c(d.rejected, s.Rejected)
	c(d.misses, s.TupleMisses)
	c(d.full, s.SpoolFull)
	c(d.lost, s.LinesLostEstimated)
	ch <- prometheus.MustNewConstMetric(d.fullSecs, prometheus.CounterValue, s.SpoolFullSeconds)
	c(d.reopens, s.Reopens, "rotated")
	c(d.reopens, s.Truncations, "truncated")
	ch <- prometheus.MustNewConstMetric(d.backlog, prometheus.GaugeValue, float64(s.BacklogBytes))
	in.tailMetrics.Collect(ch)
}

// Stats are the ingest's counters.
type Stats struct {
	Lines, Bytes, Recorded, Rejected, TupleMisses uint64
	SpoolFull, Reopens, Truncations               uint64
	LinesLostEstimated                            uint64
	SpoolFullSeconds                              float64
	BacklogBytes                                  int64
	// Logtail lines: sent, dropped because the sender was behind, lost
	// to write errors (ipng_logtail_lines_*_total{source="nginx"}).
	LogtailSent, LogtailDropped, LogtailErrors uint64
}

// Stats returns the current counters; safe for concurrent use.
func (in *Ingest) Stats() Stats {
	s := Stats{
		Lines: in.st.lines.Load(), Bytes: in.st.bytes.Load(), Recorded: in.st.recorded.Load(),
		Rejected: in.st.rejected.Load(), TupleMisses: in.st.misses.Load(), SpoolFull: in.st.spoolFull.Load(),
		LinesLostEstimated: in.loss.lost.Load(), SpoolFullSeconds: float64(in.loss.fullSeconds.Load()) / 1000,
		Reopens: in.st.reopens.Load(), Truncations: in.st.truncs.Load(), BacklogBytes: in.st.backlog.Load(),
	}
	t := &in.tailCounters
	s.LogtailSent, s.LogtailDropped, s.LogtailErrors = t.Sent.Load(), t.QueueFull.Load(), t.SendErrors.Load()
	return s
}
