package monitoring

import (
	"fmt"
	"strings"
)

// Runbook anchors in docs/runbook.md, one per alert. The test of the bundle
// checks that each exists as a heading there.
const (
	anchorAgentDown      = "agent-down-or-absent"
	anchorNotAttached    = "bpf-program-not-attached"
	anchorBPFEvents      = "bpf-program-events-lost-or-failed"
	anchorFallbacks      = "attribution-falling-back"
	anchorIfindexMisses  = "ifindex-misses-rising"
	anchorTupleMisses    = "nginx-tuple-misses"
	anchorBacklog        = "nginx-backlog-growing"
	anchorSpoolFull      = "nginx-spool-full"
	anchorRejected       = "outcomes-rejected"
	anchorSeriesCap      = "series-cap"
	anchor5xxBurn        = "5xx-error-budget-burn"
	anchorLatencyP99High = "latency-p99-high"
	anchorHandshakes     = "handshakes-failing"
)

// burnWindow is one long/short window pair of a multi-window burn-rate
// alert and the burn rate both must exceed.
type burnWindow struct {
	long, short string
	factor      float64
}

// Burn-rate pairs (Google SRE workbook, chapter 5): the fast alert pages
// when 2 % (1h) or 5 % (6h) of a 30-day budget is spent, the slow one
// opens a ticket at 10 % (3d) or a steady burn of the whole budget.
var (
	fastBurn = []burnWindow{{"1h", "5m", 14.4}, {"6h", "30m", 6}}
	slowBurn = []burnWindow{{"1d", "2h", 3}, {"3d", "6h", 1}}
)

func burnExpr(windows []burnWindow, budget float64) string {
	var parts []string
	for _, w := range windows {
		parts = append(parts, fmt.Sprintf("(\n  instance_source_tag:ipng_requests_5xx:ratio_rate%s > (%g * %g)\nand\n  instance_source_tag:ipng_requests_5xx:ratio_rate%s > (%g * %g)\n)",
			w.long, w.factor, budget, w.short, w.factor, budget))
	}
	return strings.Join(parts, "\nor\n")
}

// Alerts are the alerting rules, every threshold from cfg.
func Alerts(cfg Config) []Rule {
	var rules []Rule
	add := func(name, severity, anchor, expr, forDur, summary, description string) {
		rules = append(rules, Rule{
			Alert:  name,
			Expr:   expr,
			For:    forDur,
			Labels: map[string]string{"severity": severity},
			Annotations: map[string]string{
				"summary":     summary,
				"description": description,
				"runbook_url": cfg.RunbookURL + "#" + anchor,
			},
		})
	}
	budget := 1 - cfg.SLO
	job := fmt.Sprintf(`job="%s"`, cfg.Job)

	add("IpngStatsAgentDown", "critical", anchorAgentDown,
		fmt.Sprintf("up{%s} == 0", job), cfg.AgentDownFor,
		"ipng-stats agent {{ $labels.instance }} is down.",
		"Prometheus could not scrape the ipng-stats agent on {{ $labels.instance }} for "+cfg.AgentDownFor+": HTTP traffic of that node is not accounted.")
	add("IpngStatsAgentAbsent", "critical", anchorAgentDown,
		fmt.Sprintf("absent(up{%s})", job), cfg.AgentDownFor,
		"No ipng-stats agent is scraped.",
		fmt.Sprintf("Prometheus has no target of job %q: the scrape configuration or the PodMonitor is missing, or no agent runs.", cfg.Job))
	add("IpngStatsBPFNotAttached", "critical", anchorNotAttached,
		"ipng_bpf_attached == 0", cfg.AgentDownFor,
		"ipng-stats on {{ $labels.instance }} runs without its BPF program.",
		"The sock_ops program is not attached on {{ $labels.instance }} (mode auto after a load error): connections of nginx and other servers not using IP_PKTINFO get the default tag.")
	add("IpngStatsBPFEventsFailing", "warning", anchorBPFEvents,
		`instance_event:ipng_bpf_events:rate10m{event=~".*_failed|no_ifindex|skb_missing"} > 0`, "15m",
		"BPF program on {{ $labels.instance }} reports {{ $labels.event }}.",
		"The sock_ops program counted {{ $value | humanize }} {{ $labels.event }} events per second over 10 minutes on {{ $labels.instance }}: connections are not stamped or not counted.")
	add("IpngStatsAttributionFallingBack", "warning", anchorFallbacks,
		fmt.Sprintf(`instance_reason:ipng_attribution_fallbacks:rate10m{reason!~"nginx_.*"} > %g`, cfg.FallbacksPerSecond), "15m",
		"ipng-stats on {{ $labels.instance }} falls back: {{ $labels.reason }}.",
		"{{ $value | humanize }} connections per second on {{ $labels.instance }} were attributed other than by a BPF stamp (reason {{ $labels.reason }}): tags may be wrong or the default.")
	add("IpngStatsIfindexMisses", "warning", anchorIfindexMisses,
		fmt.Sprintf(`instance_family:ipng_ifindex_misses:rate10m > %g`, cfg.IfindexMissesPerSecond), "15m",
		"Connections from an unbound interface on {{ $labels.instance }} ({{ $labels.family }}).",
		"{{ $value | humanize }} {{ $labels.family }} connections per second on {{ $labels.instance }} arrive on an interface without a binding and get the default tag: a binding is missing, or a device was renamed.")
	add("IpngStatsNginxTupleMisses", "warning", anchorTupleMisses,
		fmt.Sprintf(`instance:ipng_nginx_tuple_misses:ratio_rate10m > %g`, cfg.TupleMissRatio), "15m",
		"nginx lines on {{ $labels.instance }} are not found in the 4-tuple map.",
		"{{ $value | humanizePercentage }} of the nginx access-log lines recorded on {{ $labels.instance }} had no BPF stamp and got the default tag.")
	add("IpngStatsNginxBacklogGrowing", "warning", anchorBacklog,
		fmt.Sprintf(`ipng_nginx_backlog_bytes > %g and deriv(ipng_nginx_backlog_bytes[10m]) > 0`, cfg.BacklogBytes), "10m",
		"The nginx access-log backlog on {{ $labels.instance }} keeps growing.",
		"{{ $value | humanize1024 }}B of access log on {{ $labels.instance }} are not read yet and the backlog grows: the agent does not keep up; the spool will fill and lines will be lost.")
	add("IpngStatsNginxSpoolFull", "critical", anchorSpoolFull,
		`increase(ipng_nginx_spool_full_total[10m]) > 0`, "",
		"The nginx spool on {{ $labels.instance }} was full: access-log lines were lost.",
		"The spool filesystem of the nginx access log on {{ $labels.instance }} was found full {{ $value | humanize }} times in 10 minutes; nginx could not write those lines, and their requests are not counted.")
	add("IpngStatsOutcomesRejected", "warning", anchorRejected,
		fmt.Sprintf(`instance_reason:ipng_outcomes_rejected:rate10m > %g`, cfg.RejectedPerSecond), "10m",
		"ipng-stats on {{ $labels.instance }} rejects requests: {{ $labels.reason }}.",
		"{{ $value | humanize }} request outcomes per second on {{ $labels.instance }} could not be recorded (reason {{ $labels.reason }}); for nginx_* reasons, access-log lines do not parse.")
	add("IpngStatsSeriesNearCap", "warning", anchorSeriesCap,
		fmt.Sprintf(`instance:ipng_series:ratio > %g`, cfg.SeriesCapRatio), "15m",
		"ipng-stats on {{ $labels.instance }} is close to its series cap.",
		"{{ $labels.instance }} uses {{ $value | humanizePercentage }} of metrics.max_series; at the cap, new VIPs are folded into vip=\"other\".")
	add("IpngStatsSeriesCapReached", "warning", anchorSeriesCap,
		`rate(ipng_series_overflow_total[5m]) > 0`, "5m",
		"ipng-stats on {{ $labels.instance }} folds new VIPs into vip=\"other\".",
		"The series cap (metrics.max_series) is reached on {{ $labels.instance }}: traffic of new VIPs is counted under vip=\"other\".")
	add("IpngStats5xxBudgetBurnFast", "critical", anchor5xxBurn,
		burnExpr(fastBurn, budget), "2m",
		"5xx errors of {{ $labels.source_tag }} on {{ $labels.instance }} burn the error budget fast.",
		fmt.Sprintf("The 5xx ratio of tag {{ $labels.source_tag }} on {{ $labels.instance }} is {{ $value | humanizePercentage }}, burning the %g %% SLO's budget at 6x or more (2 %% of a 30-day budget per hour or 5 %% per 6 hours).", cfg.SLO*100))
	add("IpngStats5xxBudgetBurnSlow", "warning", anchor5xxBurn,
		burnExpr(slowBurn, budget), "15m",
		"5xx errors of {{ $labels.source_tag }} on {{ $labels.instance }} burn the error budget.",
		fmt.Sprintf("The 5xx ratio of tag {{ $labels.source_tag }} on {{ $labels.instance }} is {{ $value | humanizePercentage }}: at this rate the %g %% SLO's 30-day budget runs out early.", cfg.SLO*100))
	add("IpngStatsLatencyP99High", "warning", anchorLatencyP99High,
		fmt.Sprintf("instance_source_tag:ipng_request_duration_seconds:histogram_quantile5m{quantile=\"0.99\"} > %g\nand on (job, instance, source_tag)\ninstance_source_tag:ipng_requests:rate5m > %g",
			cfg.LatencyP99Seconds, cfg.MinRequestRate), cfg.LatencyFor,
		"p99 latency of {{ $labels.source_tag }} on {{ $labels.instance }} is high.",
		fmt.Sprintf("The 99th percentile of request duration of tag {{ $labels.source_tag }} on {{ $labels.instance }} is {{ $value | humanizeDuration }}, above %gs.", cfg.LatencyP99Seconds))
	add("IpngStatsHandshakesFailing", "critical", anchorHandshakes,
		fmt.Sprintf("instance_source_tag:ipng_tcp_handshakes:ratio_rate5m < %g\nand on (job, instance, source_tag)\ninstance_source_tag:ipng_tcp_syn_received:rate5m > %g",
			cfg.HandshakeRatio, cfg.MinSYNRate), "10m",
		"TCP handshakes of {{ $labels.source_tag }} on {{ $labels.instance }} do not complete.",
		"Only {{ $value | humanizePercentage }} of the SYNs arriving on the interfaces of tag {{ $labels.source_tag }} on {{ $labels.instance }} complete a handshake: the return path (DSR through the tunnel), reverse-path filtering or the VIP is broken. `ipng-stats check` on the node names the stage.")
	return rules
}
