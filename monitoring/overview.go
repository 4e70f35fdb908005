package monitoring

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// rate is `sum by (by) (rate(metric{match}[$__rate_interval]))`; by "" sums
// everything.
func rate(metric, match, by string) string {
	if by == "" {
		return fmt.Sprintf("sum(rate(%s{%s}[$__rate_interval]))", metric, match)
	}
	return fmt.Sprintf("sum by (%s) (rate(%s{%s}[$__rate_interval]))", by, metric, match)
}

// codeRatio is the share of requests of code class cls, 0 (not absent)
// while that class has not been seen.
func codeRatio(cls, match, by string) string {
	return fmt.Sprintf(`(%s or %s * 0) / %s`,
		rate("ipng_requests_total", match+`, code="`+cls+`"`, by),
		rate("ipng_requests_total", match, by),
		rate("ipng_requests_total", match, by))
}

// quantile is the q-quantile of the request duration histogram by labels.
func quantile(q float64, match, by string) string {
	return fmt.Sprintf("histogram_quantile(%g, %s)", q, rate("ipng_request_duration_seconds_bucket", match, by+", le"))
}

// latencyTargets are p50, p90 and p99 by a label.
func latencyTargets(match, by string) []*prometheus.DataqueryBuilder {
	var out []*prometheus.DataqueryBuilder
	for _, q := range []float64{0.5, 0.9, 0.99} {
		out = append(out, query(quantile(q, match, by), fmt.Sprintf("p%g {{%s}}", q*100, by)))
	}
	return out
}

// bitsTargets are bits/s received in requests and sent in responses by a
// label.
func bitsTargets(match, by string) []*prometheus.DataqueryBuilder {
	return []*prometheus.DataqueryBuilder{
		query("8 * "+rate("ipng_request_bytes_total", match, by), "in {{"+by+"}}"),
		query("8 * "+rate("ipng_response_bytes_total", match, by), "out {{"+by+"}}"),
	}
}

// Overview is the per source tag dashboard: traffic, errors, latency,
// bandwidth and connections, with a row repeated per tag.
func Overview(cfg Config) (dashboard.Dashboard, error) {
	budget := 1 - cfg.SLO
	d := newDashboard("ipng-stats-overview", "ipng-stats / Overview",
		"HTTP traffic per source tag (the interface a request arrived on): rates, errors, latency, bandwidth and connections.").
		WithVariable(jobVar()).
		WithVariable(instanceVar()).
		WithVariable(tagVar()).
		WithVariable(queryVar("vip", "VIP", `label_values(ipng_requests_total{`+selInstance+`, source_tag=~"$source_tag"}, vip)`, true))

	d = d.WithRow(dashboard.NewRowBuilder("Summary")).
		WithPanel(single("Requests/s",
			"Requests per second over the selected tags, VIPs and instances. Zero while clients are sending traffic means the agent does not see it: check the Agent health dashboard (BPF attached, nginx ingest) and that the server runs in the attached cgroup.",
			unitReqps, query(rate("ipng_requests_total", selTags, ""), ""))).
		WithPanel(single("5xx ratio",
			fmt.Sprintf("Share of requests answered 5xx. Above the error budget of the SLO (%g %%) the burn-rate alerts fire; look at the 5xx ratio per tag below to see whether one path or every path fails, then at the servers' logs.", budget*100),
			unitRatio, query(codeRatio("5xx", selTags, ""), ""),
			step("green", nil), step("orange", cog.ToPtr(budget)), step("red", cog.ToPtr(10*budget)))).
		WithPanel(single("p99 latency",
			fmt.Sprintf("99th percentile of request duration (first byte read to last byte written) from the histogram buckets. Above %gs the latency alert fires: compare the tags to see if one path is slow, then the VIP drill-down.", cfg.LatencyP99Seconds),
			unitSeconds, query(quantile(0.99, selTags, "job"), ""),
			step("green", nil), step("red", cog.ToPtr(cfg.LatencyP99Seconds)))).
		WithPanel(single("Active connections",
			"Connections open now (counted from the BPF program's events and by the proxy). Growing without more requests/s points to slow or stuck clients, or keep-alive connections piling up.",
			unitCount, query(`sum(ipng_connections_active{`+selTags+`})`, "")))

	d = d.WithRow(dashboard.NewRowBuilder("Per source tag")).
		WithPanel(graph("Requests/s per source tag",
			"Requests per second by the tag of the interface they arrived on. A tag dropping to zero while others carry on means that path (tunnel, load-balancer, uplink) stopped delivering, or its binding was lost: a rise of `direct` at the same time shows traffic falling back to the default tag.",
			unitReqps, query(rate("ipng_requests_total", selTags, "source_tag"), "{{source_tag}}"))).
		WithPanel(stacked("Share of traffic per source tag",
			"Each tag's share of all requests. A sudden shift between tags is a routing change (a maglev drained, anycast moved); a growing `direct` share with configured tunnels suggests missing bindings (see ifindex misses on Agent health).",
			unitRatio, query(rate("ipng_requests_total", selTags, "source_tag")+" / ignoring(source_tag) group_left "+rate("ipng_requests_total", selTags, ""), "{{source_tag}}")).Max(1)).
		WithPanel(graph("5xx ratio per source tag",
			"Share of each tag's requests answered 5xx. One tag high and the others fine points to that path or the servers behind it; all tags high points to the backend. The burn-rate alerts use the same ratio per instance.",
			unitRatio, query(codeRatio("5xx", selTags, "source_tag"), "{{source_tag}}"))).
		WithPanel(graph("4xx ratio per source tag",
			"Share of each tag's requests answered 4xx (client errors). A jump on one tag often means a scanner or a misrouted client on that path; on all tags, a broken deploy (missing routes, auth).",
			unitRatio, query(codeRatio("4xx", selTags, "source_tag"), "{{source_tag}}"))).
		WithPanel(graph("Latency p50 / p90 / p99 per source tag",
			"Request duration quantiles from the histogram buckets (bounds set by metrics.duration_buckets; a quantile above the largest bound shows as that bound). A tag slower than the others points to its path; all slower, to the servers.",
			unitSeconds, latencyTargets(selTags, "source_tag")...)).
		WithPanel(graph("Bandwidth per source tag",
			"Bits per second received in requests (in) and sent in responses (out), headers and bodies. Compare with the interface counters: much lower here means traffic that is not HTTP or not in the attached cgroup.",
			unitBits, bitsTargets(selTags, "source_tag")...)).
		WithPanel(graph("Active connections per source tag",
			"Connections open now per tag. Connections are counted for sockets the BPF program stamped (and by the proxy for others): nothing here while requests flow means the servers run outside the attached cgroup.",
			unitCount, query(`sum by (source_tag) (ipng_connections_active{`+selTags+`})`, "{{source_tag}}"))).
		WithPanel(graph("5xx error-budget burn rate per source tag (1h)",
			fmt.Sprintf("How fast each tag and instance burns its error budget (1 − SLO, SLO %g %%) over the last hour, from the recording rules: 1 uses the budget up in exactly the SLO period, 14.4 pages. See the runbook's 5xx burn-rate section.", cfg.SLO*100),
			unitCount, query(fmt.Sprintf(`instance_source_tag:ipng_requests_5xx:ratio_rate1h{%s, source_tag=~"$source_tag"} / %g`, selInstance, budget), "{{source_tag}} {{instance}}")))

	hs := `job=~"$job", instance=~"$instance", source_tag=~"$source_tag"`
	d = d.WithRow(dashboard.NewRowBuilder("Handshakes per interface")).
		WithPanel(graph("SYNs received per source tag",
			"TCP SYNs per second arriving on the interfaces bound to each tag, counted where they enter (before reverse-path filtering). SYNs without SYN-ACKs (next panel): the stack does not answer (rp_filter, VIP missing, no listener). SYNs well above the new connections per second of the tag (ipng_connections_total): handshakes do not complete, which IpngStatsHandshakesFailing watches.",
			unitCount, query(rate("ipng_tcp_syn_received_total", hs, "source_tag"), "{{source_tag}}")).Span(12)).
		WithPanel(graph("SYN-ACKs sent and through the tunnel",
			"SYN-ACKs per second sent in answer to the SYNs of each tag, and those that left through a bound interface itself (wrong egress): in a DSR setup wrong egress must be zero; otherwise a listener is bound to the device or a route points back into the tunnel.",
			unitCount, query(rate("ipng_tcp_synack_sent_total", hs, "source_tag"), "sent {{source_tag}}"),
			query(rate("ipng_tcp_synack_wrong_egress_total", hs, "source_tag"), "wrong egress {{source_tag}}")).Span(12))

	tag := `job=~"$job", instance=~"$instance", source_tag="$source_tag", vip=~"$vip"`
	d = d.WithRow(dashboard.NewRowBuilder("Source tag $source_tag").Repeat("source_tag")).
		WithPanel(stacked("Requests/s by code class",
			"This tag's requests per second by status class. A new 5xx or `unknown` band (no response: the client left, or the server closed early) is the first thing to look for.",
			unitReqps, query(rate("ipng_requests_total", tag, "code"), "{{code}}")).Span(8)).
		WithPanel(graph("Latency",
			"This tag's request duration quantiles. Compare with the other tags' rows: a path-specific rise is the network or load-balancer in front of this interface.",
			unitSeconds, latencyTargets(tag, "source_tag")...).Span(8)).
		WithPanel(graph("Requests/s per VIP",
			"This tag's requests by VIP (local address). A VIP missing here but present on other tags is not announced or not routed over this path.",
			unitReqps, query(rate("ipng_requests_total", tag, "vip"), "{{vip}}")).Span(8))
	return d.Build()
}
