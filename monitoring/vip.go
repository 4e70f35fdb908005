package monitoring

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// VIPDrilldown is one VIP across every source tag: code classes, latency
// heatmap and quantiles, request and response size distributions.
func VIPDrilldown() (dashboard.Dashboard, error) {
	d := newDashboard("ipng-stats-vip", "ipng-stats / VIP drill-down",
		"One VIP (local address) across every source tag: status classes, latency distribution and request/response sizes.").
		WithVariable(jobVar()).
		WithVariable(instanceVar()).
		WithVariable(queryVar("vip", "VIP", `label_values(ipng_requests_total{`+selInstance+`}, vip)`, false)).
		WithVariable(queryVar("source_tag", "Source tag", `label_values(ipng_requests_total{`+selInstance+`, vip="$vip"}, source_tag)`, true))

	d = d.WithRow(dashboard.NewRowBuilder("Requests")).
		WithPanel(graph("Requests/s per source tag",
			"Requests per second to this VIP by the tag of the interface they arrived on. A tag missing here that carries other VIPs means this VIP is not announced or not routed over that path.",
			unitReqps, query(rate("ipng_requests_total", selVIP, "source_tag"), "{{source_tag}}"))).
		WithPanel(stacked("Requests/s by code class",
			"This VIP's requests per second by status class over the selected tags. 5xx is the servers; 4xx the clients (or a broken route); `unknown` means no response was sent (client left, server closed).",
			unitReqps, query(rate("ipng_requests_total", selVIP, "code"), "{{code}}"))).
		WithPanel(graph("5xx ratio per source tag",
			"Share of this VIP's requests answered 5xx, per tag. High on every tag: the backend of this VIP. High on one tag only: something on that path (a load-balancer health check, a tunnel MTU problem cutting responses).",
			unitRatio, query(codeRatio("5xx", selVIP, "source_tag"), "{{source_tag}}"))).
		WithPanel(graph("Bandwidth per source tag",
			"Bits per second to (in) and from (out) this VIP per tag. Out far above in is normal for downloads; a sudden drop of out with steady requests/s means smaller (error) responses.",
			unitBits, bitsTargets(selVIP, "source_tag")...))

	d = d.WithRow(dashboard.NewRowBuilder("Latency and sizes")).
		WithPanel(heat("Latency distribution",
			"Requests per second in each duration bucket (metrics.duration_buckets). A second band appearing above the usual one is a slow subset of requests: split by tag with the quantiles panel, then check the servers.",
			unitSeconds, rate("ipng_request_duration_seconds_bucket", selVIP, "le"))).
		WithPanel(graph("Latency p50 / p90 / p99 per source tag",
			"Duration quantiles per tag from the histogram buckets. A quantile pinned at the largest bucket bound means requests slower than that bound: raise metrics.duration_buckets if that is expected.",
			unitSeconds, latencyTargets(selVIP, "source_tag")...)).
		WithPanel(heat("Request size distribution",
			"Requests per second in each request size bucket (headers and body, metrics.size_buckets). Large requests appearing suddenly are uploads, or abuse against this VIP.",
			unitBytes, rate("ipng_request_size_bytes_bucket", selVIP, "le"))).
		WithPanel(heat("Response size distribution",
			"Responses per second in each size bucket. Responses shifting to the smallest bucket with steady traffic are usually error pages or empty answers: check the code classes above.",
			unitBytes, rate("ipng_response_size_bytes_bucket", selVIP, "le"))).
		WithPanel(graph("Average request and response size per source tag",
			"Mean bytes per request received and sent, per tag (sum of sizes over count). Different paths serving very different sizes for the same VIP points to clients or caches that differ per path.",
			unitBytes,
			query(rate("ipng_request_size_bytes_sum", selVIP, "source_tag")+" / "+rate("ipng_request_size_bytes_count", selVIP, "source_tag"), "request {{source_tag}}"),
			query(rate("ipng_response_size_bytes_sum", selVIP, "source_tag")+" / "+rate("ipng_response_size_bytes_count", selVIP, "source_tag"), "response {{source_tag}}"))).
		WithPanel(graph("Connections and requests in flight per source tag",
			"Open connections, and requests being read or written now, per tag (in-flight gauges come from the proxy and embedding servers; nginx reports none). Many requests stuck reading are slow clients or a slowloris; stuck writing, slow downloads.",
			unitCount,
			query(`sum by (source_tag) (ipng_connections_active{`+selVIP+`})`, "connections {{source_tag}}"),
			query(`sum by (source_tag) (ipng_requests_reading{`+selVIP+`})`, "reading {{source_tag}}"),
			query(`sum by (source_tag) (ipng_requests_writing{`+selVIP+`})`, "writing {{source_tag}}")))
	return d.Build()
}
