package collector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names. See docs/metrics.md.
const (
	metricRequests       = "ipng_requests_total"
	metricRequestBytes   = "ipng_request_bytes_total"
	metricResponseBytes  = "ipng_response_bytes_total"
	metricRequestSeconds = "ipng_request_seconds_total"
	metricDurationHist   = "ipng_request_duration_seconds"
	metricReqSizeHist    = "ipng_request_size_bytes"
	metricRespSizeHist   = "ipng_response_size_bytes"
	metricConnsTotal     = "ipng_connections_total"
	metricConnsActive    = "ipng_connections_active"
	metricReading        = "ipng_requests_reading"
	metricWriting        = "ipng_requests_writing"
	metricIfindexMisses  = "ipng_ifindex_misses_total"
	metricFallbacks      = "ipng_attribution_fallbacks_total"
	metricRejected       = "ipng_outcomes_rejected_total"
	metricOverflow       = "ipng_series_overflow_total"
	metricSeries         = "ipng_series"
	metricSeriesLimit    = "ipng_series_limit"
	metricBPFEvents      = "ipng_bpf_events_total"
	metricBuildInfo      = "ipng_build_info"
	metricSynReceived    = "ipng_tcp_syn_received_total"
	metricSynackSent     = "ipng_tcp_synack_sent_total"
	metricSynackWrong    = "ipng_tcp_synack_wrong_egress_total"
)

// Label names.
const (
	labelCode      = "code"
	labelSourceTag = "source_tag"
	labelVIP       = "vip"
	labelFamily    = "family"
	labelReason    = "reason"
	labelEvent     = "event"
	labelGoVersion = "goversion"
	labelRevision  = "revision"
	labelVersion   = "version"
)

// family describes one metric family: its help text and label names in
// sorted order (the order of the label pairs in every metric).
type family struct {
	name, help string
	labels     []string
}

// families lists every family the collector can expose, sorted by name.
func families() []family {
	series := []string{labelSourceTag, labelVIP}
	coded := []string{labelCode, labelSourceTag, labelVIP}
	return []family{
		{metricFallbacks, "Connections attributed to the default source tag, by reason.", []string{labelReason}},
		{metricBPFEvents, "Events counted by the sock_ops BPF program, summed over CPUs.", []string{labelEvent}},
		{metricBuildInfo, "Build information of ipng-stats; the value is always 1.", []string{labelGoVersion, labelRevision, labelVersion}},
		{metricConnsActive, "Connections currently open, by source tag and VIP.", series},
		{metricConnsTotal, "Connections accepted, by source tag and VIP.", series},
		{metricIfindexMisses, "Accepted connections whose ingress interface could not be found, by address family.", []string{labelFamily}},
		{metricRejected, "Request outcomes that could not be recorded, by reason.", []string{labelReason}},
		{metricRequestBytes, "Bytes received from clients in requests, by source tag, VIP and status code class.", coded},
		{metricDurationHist, "Request duration in seconds, by source tag and VIP.", series},
		{metricRequestSeconds, "Total time spent serving requests in seconds, by source tag, VIP and status code class.", coded},
		{metricReqSizeHist, "Request size in bytes, by source tag and VIP.", series},
		{metricReading, "Requests currently being read, by source tag and VIP.", series},
		{metricRequests, "Requests served, by source tag, VIP and status code class.", coded},
		{metricWriting, "Requests whose response is currently being written, by source tag and VIP.", series},
		{metricResponseBytes, "Bytes sent to clients in responses, by source tag, VIP and status code class.", coded},
		{metricRespSizeHist, "Response size in bytes, by source tag and VIP.", series},
		{metricSeries, "Distinct (source_tag, vip) series, not counting overflow series.", nil},
		{metricSeriesLimit, "Configured cap on (source_tag, vip) series.", nil},
		{metricOverflow, "Series lookups of new (source_tag, vip) pairs folded into the overflow series (vip other) because the cap was reached.", nil},
		{metricSynReceived, "TCP SYNs received on the interfaces bound to the source tag, by source tag and VIP.", series},
		{metricSynackSent, "TCP SYN-ACKs sent in answer to SYNs received on the interfaces bound to the source tag, by source tag and VIP.", series},
		{metricSynackWrong, "TCP SYN-ACKs that left through an interface bound to the source tag (zero in a DSR setup), by source tag and VIP.", series},
	}
}

// descs holds one prometheus.Desc per family, for Describe and Collect.
type descs struct {
	byName map[string]*prometheus.Desc
}

func newDescs() *descs {
	d := &descs{byName: make(map[string]*prometheus.Desc)}
	for _, f := range families() {
		d.byName[f.name] = prometheus.NewDesc(f.name, f.help, f.labels, nil)
	}
	return d
}
