package monitoring

import (
	"fmt"

	"github.com/prometheus/common/model"
)

// RuleFile is a Prometheus rule file.
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is one group of rules evaluated together.
type RuleGroup struct {
	Name  string `yaml:"name"`
	Rules []Rule `yaml:"rules"`
}

// Rule is a recording rule (Record set) or an alert (Alert set).
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

func parseDuration(s string) (model.Duration, error) {
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return d, nil
}

// byTag is the aggregation level of the per-tag recording rules: one
// series per agent and source tag.
const byTag = "job, instance, source_tag"

// SLOWindows are the windows of the 5xx ratio the burn-rate alerts read
// (the multi-window, multi-burn-rate pairs of the Google SRE workbook).
var SLOWindows = []string{"5m", "30m", "1h", "2h", "6h", "1d", "3d"}

// Quantiles of the recorded latency quantile series.
var Quantiles = []float64{0.5, 0.9, 0.99}

// recordRate is `sum by (by) (rate(metric{match}[w]))`.
func recordRate(metric, match, by, w string) string {
	if match != "" {
		metric += "{" + match + "}"
	}
	return fmt.Sprintf("sum by (%s) (rate(%s[%s]))", by, metric, w)
}

// RecordingRules are the rates and ratios of the dashboards and alerts,
// named level:metric:operations: the level lists the labels kept.
func RecordingRules() []Rule {
	var rules []Rule
	add := func(record, expr string, labels map[string]string) {
		rules = append(rules, Rule{Record: record, Expr: expr, Labels: labels})
	}
	add("instance_source_tag_code:ipng_requests:rate5m", recordRate("ipng_requests_total", "", byTag+", code", "5m"), nil)
	add("instance_source_tag:ipng_requests:rate5m", recordRate("ipng_requests_total", "", byTag, "5m"), nil)
	add("source_tag:ipng_requests:rate5m", "sum by (job, source_tag) (instance_source_tag:ipng_requests:rate5m)", nil)
	for _, w := range SLOWindows {
		// 0 rather than nothing while no 5xx has been seen, so the ratio
		// exists for every tag that has traffic.
		add("instance_source_tag:ipng_requests_5xx:ratio_rate"+w, fmt.Sprintf("(%s or 0 * %s)\n/\n%s",
			recordRate("ipng_requests_total", `code="5xx"`, byTag, w),
			recordRate("ipng_requests_total", "", byTag, w),
			recordRate("ipng_requests_total", "", byTag, w)), nil)
	}
	add("instance_source_tag:ipng_requests_4xx:ratio_rate5m", fmt.Sprintf("(%s or 0 * %s)\n/\n%s",
		recordRate("ipng_requests_total", `code="4xx"`, byTag, "5m"),
		recordRate("ipng_requests_total", "", byTag, "5m"),
		recordRate("ipng_requests_total", "", byTag, "5m")), nil)
	add("instance_source_tag:ipng_request_bytes:rate5m", recordRate("ipng_request_bytes_total", "", byTag, "5m"), nil)
	add("instance_source_tag:ipng_response_bytes:rate5m", recordRate("ipng_response_bytes_total", "", byTag, "5m"), nil)
	add("instance_source_tag_le:ipng_request_duration_seconds_bucket:rate5m",
		recordRate("ipng_request_duration_seconds_bucket", "", byTag+", le", "5m"), nil)
	for _, q := range Quantiles {
		add("instance_source_tag:ipng_request_duration_seconds:histogram_quantile5m",
			fmt.Sprintf("histogram_quantile(%g, instance_source_tag_le:ipng_request_duration_seconds_bucket:rate5m)", q),
			map[string]string{"quantile": fmt.Sprint(q)})
	}
	add("instance_family:ipng_ifindex_misses:rate10m", recordRate("ipng_ifindex_misses_total", "", "job, instance, family", "10m"), nil)
	add("instance_reason:ipng_attribution_fallbacks:rate10m", recordRate("ipng_attribution_fallbacks_total", "", "job, instance, reason", "10m"), nil)
	add("instance_reason:ipng_outcomes_rejected:rate10m", recordRate("ipng_outcomes_rejected_total", "", "job, instance, reason", "10m"), nil)
	add("instance_event:ipng_bpf_events:rate10m", recordRate("ipng_bpf_events_total", "", "job, instance, event", "10m"), nil)
	add("instance:ipng_nginx_tuple_misses:ratio_rate10m", fmt.Sprintf("%s\n/\n%s",
		recordRate("ipng_nginx_tuple_misses_total", "", "job, instance", "10m"),
		recordRate("ipng_nginx_lines_recorded_total", "", "job, instance", "10m")), nil)
	add("instance:ipng_series:ratio", "ipng_series / ipng_series_limit", nil)
	add("instance_source_tag:ipng_tcp_syn_received:rate5m", recordRate("ipng_tcp_syn_received_total", "", byTag, "5m"), nil)
	add("instance_source_tag:ipng_tcp_synack_sent:rate5m", recordRate("ipng_tcp_synack_sent_total", "", byTag, "5m"), nil)
	// Handshakes completed are the connections the sock_ops program counted
	// (ipng_connections_total), compared with the SYNs received on the
	// tag's bound interfaces; only tags with handshake counters have it,
	// and it is 1 (nothing failed) while no SYN arrives.
	add("instance_source_tag:ipng_tcp_handshakes:ratio_rate5m", fmt.Sprintf("(\n  %s\n/\n  (instance_source_tag:ipng_tcp_syn_received:rate5m > 0)\n)\nor\n(instance_source_tag:ipng_tcp_syn_received:rate5m * 0 + 1)",
		recordRate("ipng_connections_total", "", byTag, "5m")), nil)
	return rules
}
