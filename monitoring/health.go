package monitoring

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// attachedMapping shows ipng_bpf_attached as words.
var attachedMapping = []dashboard.ValueMapping{{ValueMap: &dashboard.ValueMap{
	Type: dashboard.MappingTypeValueToText,
	Options: map[string]dashboard.ValueMappingResult{
		"0": {Text: cog.ToPtr("not attached"), Color: cog.ToPtr("red")},
		"1": {Text: cog.ToPtr("attached"), Color: cog.ToPtr("green")},
	},
}}}

// AgentHealth is the agents' own state: scrape, BPF program, attribution,
// nginx ingest and cardinality.
func AgentHealth(cfg Config) (dashboard.Dashboard, error) {
	d := newDashboard("ipng-stats-agent", "ipng-stats / Agent health",
		"The agents themselves: scrape, BPF program, attribution fallbacks, nginx access-log ingest, cardinality cap and versions.").
		WithVariable(jobVar()).
		WithVariable(instanceVar())

	d = d.WithRow(dashboard.NewRowBuilder("Agents")).
		WithPanel(single("Agents up",
			"Targets of the selected jobs that Prometheus scraped successfully. Fewer than the number of nodes: an agent is down, crashed on start (journalctl -u ipng-stats, kubectl logs) or its port is not reachable.",
			unitCount, query(`sum(up{`+selInstance+`})`, ""))).
		WithPanel(single("BPF program not attached",
			"Agents running without the sock_ops program (ipng_bpf_attached 0, mode auto after a load error). Their connections are attributed only by servers using IP_PKTINFO; nginx lines fall back to the default tag. Read the agent's log for the load error, then run `ipng-stats check`.",
			unitCount, query(`count(ipng_bpf_attached{`+selInstance+`} == 0) or vector(0)`, ""),
			step("green", nil), step("red", cog.ToPtr(1.0)))).
		WithPanel(single("Versions",
			"Distinct ipng-stats versions across the selected agents. More than one outside a rollout means some nodes were not upgraded.",
			unitCount, query(`count(count by (version) (ipng_build_info{`+selInstance+`}))`, ""),
			step("green", nil), step("orange", cog.ToPtr(2.0)))).
		WithPanel(single("Series / limit (max)",
			fmt.Sprintf("The highest ipng_series / ipng_series_limit over the agents. Above %g the cap alert fires; at 1 new VIPs are folded into vip=\"other\". Raise metrics.max_series, or find what creates VIPs (a scan of many local addresses).", cfg.SeriesCapRatio),
			unitRatio, query(`max(ipng_series{`+selInstance+`} / ipng_series_limit{`+selInstance+`})`, ""),
			step("green", nil), step("orange", cog.ToPtr(cfg.SeriesCapRatio)), step("red", cog.ToPtr(1.0)))).
		WithPanel(graph("BPF program attached per instance",
			"1 while the agent has the sock_ops program loaded and attached, 0 when it runs without it. A 0: read the agent's log for the load error (capabilities, BTF, cgroup2 path), run `ipng-stats check`, and see the runbook.",
			unitCount, query(`ipng_bpf_attached{`+selInstance+`}`, "{{instance}}")).Max(1).Mappings(attachedMapping)).
		WithPanel(graph("Scrape duration",
			"How long Prometheus takes to scrape each agent. Growing with the number of series is expected; close to the scrape timeout means scrapes will fail: lower metrics.max_series or scrape less often.",
			unitSeconds, query(`scrape_duration_seconds{`+selInstance+`}`, "{{instance}}"))).
		WithPanel(tableOf("Build info",
			"Version, revision and Go version of every agent. Use it to check a rollout reached every node, and to report bugs.",
			instant(`max by (instance, version, revision, goversion) (ipng_build_info{`+selInstance+`})`))).
		WithPanel(tableOf("Versions across the fleet",
			"Number of agents per version. A long tail of old versions means nodes that were not upgraded.",
			instant(`count by (version) (ipng_build_info{`+selInstance+`})`)))

	d = d.WithRow(dashboard.NewRowBuilder("Attribution")).
		WithPanel(graph("ifindex misses per family",
			"Connections per second whose ingress interface has no binding (or ifindex 0): they get the default tag. These include normal traffic on interfaces you chose not to bind; a rise without a matching rise of `direct` traffic means a device was renamed or re-created under a new name: add a binding (see the runbook).",
			unitPerSec, query(rate("ipng_ifindex_misses_total", selInstance, "instance, family"), "{{family}} {{instance}}"))).
		WithPanel(graph("Attribution fallbacks by reason",
			"Connections or log lines attributed other than by a BPF stamp, by reason: not_stamped / bpf_unavailable (IP_PKTINFO used), unresolved and nginx_* (default tag). Anything but zero on a node with the program attached: check that servers run in the attached cgroup and network namespace.",
			unitPerSec, query(rate("ipng_attribution_fallbacks_total", selInstance, "instance, reason"), "{{reason}} {{instance}}"))).
		WithPanel(graph("BPF program events",
			"The sock_ops program's own counters per second. `stamped` follows new connections and `closed` closes; *_failed (a map full: conns_update_failed means a connection not counted per tag), no_ifindex and skb_missing should stay at zero; `untagged` rises briefly after an interface appears: see the runbook.",
			unitPerSec, query(rate("ipng_bpf_events_total", selInstance, "instance, event"), "{{event}} {{instance}}"))).
		WithPanel(graph("Rejected request outcomes by reason",
			"Requests that could not be recorded, by reason: invalid_source_tag / invalid_vip (from embedding servers) and nginx_* (access-log lines that do not parse). nginx_missing_field means the log_format is not the shipped one.",
			unitPerSec, query(rate("ipng_outcomes_rejected_total", selInstance, "instance, reason"), "{{reason}} {{instance}}")))

	d = d.WithRow(dashboard.NewRowBuilder("nginx access-log ingest")).
		WithPanel(graph("Lines read, recorded and rejected",
			"Access-log lines per second the agent read, recorded as requests and rejected. Read but not recorded means rejected lines (see reasons); nothing read while nginx serves means the log_file path or the access_log directive differ.",
			unitPerSec,
			query(rate("ipng_nginx_lines_total", selInstance, "instance"), "read {{instance}}"),
			query(rate("ipng_nginx_lines_recorded_total", selInstance, "instance"), "recorded {{instance}}"),
			query(rate("ipng_nginx_lines_rejected_total", selInstance, "instance"), "rejected {{instance}}"))).
		WithPanel(graph("Backlog",
			fmt.Sprintf("Bytes nginx has written that the agent has not read yet. Steady growth means the agent cannot keep up (CPU starved, or stopped); past %g MiB the backlog alert fires. When the tmpfs fills, nginx drops lines: see the spool full panel.", cfg.BacklogBytes/(1<<20)),
			unitBytes,
			query(`ipng_nginx_backlog_bytes{`+selInstance+`}`, "backlog {{instance}}"))).
		WithPanel(graph("Tuple misses",
			"Recorded lines whose connection was not found in the 4-tuple map (they get the default tag), as a share of lines recorded. Non-zero: nginx runs outside the attached cgroup or netns, or the map is too small (nginx_tuple_evicted: raise bpf.tuple_map_entries).",
			unitRatio, query(rate("ipng_nginx_tuple_misses_total", selInstance, "instance")+" / "+rate("ipng_nginx_lines_recorded_total", selInstance, "instance"), "{{instance}}"))).
		WithPanel(graph("Spool full and log reopens",
			"Times the spool filesystem was found full and the access-log lines nginx could not write meanwhile, estimated on nginx's own clock (enlarge the tmpfs or check the agent keeps up), and log reopens after rotation or truncation (each rotation should show one).",
			unitPerSec,
			query(rate("ipng_nginx_spool_full_total", selInstance, "instance"), "spool full {{instance}}"),
			query(rate("ipng_nginx_lines_lost_estimated_total", selInstance, "instance"), "lines lost (estimated) {{instance}}"),
			query(rate("ipng_nginx_log_reopens_total", selInstance, "instance, kind"), "reopen {{kind}} {{instance}}")))

	d = d.WithRow(dashboard.NewRowBuilder("Cardinality and proxy")).
		WithPanel(graph("Series and limit",
			"Distinct (source_tag, vip) series and the configured cap, per agent, and series folded into vip=\"other\" per second once the cap is reached. Folding: raise metrics.max_series or find the source of new VIPs.",
			unitCount,
			query(`ipng_series{`+selInstance+`}`, "series {{instance}}"),
			query(`ipng_series_limit{`+selInstance+`}`, "limit {{instance}}"),
			query(rate("ipng_series_overflow_total", selInstance, "instance"), "overflow/s {{instance}}"))).
		WithPanel(graph("Proxy upstream servers up",
			"Built-in proxy only: 1 while the proxy sends requests to an upstream server, 0 while it is out (failures or a failed health check). A server at 0: check it answers the health check path from this node.",
			unitCount, query(`ipng_proxy_upstream_up{`+selInstance+`}`, "{{upstream}} {{server}} {{instance}}")).Max(1))
	return d.Build()
}
