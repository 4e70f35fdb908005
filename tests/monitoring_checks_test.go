package tests

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// What TestMonitoringBundle checks against Prometheus: the dashboards'
// queries with their variables substituted, the recording rules and the
// alerts.

// promRegexp escapes a value as Grafana does for a regex matcher in a
// PromQL string literal: the regex escape, itself escaped for the string.
func promRegexp(s string) string { return strings.ReplaceAll(regexp.QuoteMeta(s), `\`, `\\`) }

// monitoringVars are the template variables as Grafana substitutes them
// with every value selected: multi-value variables as an escaped regex
// alternation.
func (n *nginxEnv) monitoringVars(target string, tags map[string]bool) map[string]string {
	var tagList []string
	for tag := range tags {
		tagList = append(tagList, promRegexp(tag))
	}
	sort.Strings(tagList)
	return map[string]string{
		"$__rate_interval": rateInterval.String(),
		"$job":             "ipng-stats",
		"$instance":        promRegexp(target),
		"$source_tag":      "(" + strings.Join(tagList, "|") + ")",
		"$vip":             "(" + promRegexp(n.topo.VIP4.String()) + "|" + promRegexp(n.topo.VIP6.String()) + ")",
	}
}

func substitute(expr string, vars map[string]string) string {
	// Longest names first: $vip must not eat into another name.
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, k := range names {
		expr = strings.ReplaceAll(expr, k, vars[k])
	}
	return expr
}

// dashboardJSON is what the test reads of a generated dashboard.
type dashboardJSON struct {
	file   string
	Title  string
	Panels []struct {
		Type, Title, Repeat string
		Targets             []struct{ RefID, Expr string }
	}
	Templating struct {
		List []struct {
			Name, Type string
			Query      string
		}
	}
}

func loadDashboards(t *testing.T) []*dashboardJSON {
	var out []*dashboardJSON
	for _, f := range bundleDashboards {
		b, err := os.ReadFile(filepath.Join(bundleDir, "dashboards", f))
		if err != nil {
			t.Fatal(err)
		}
		d := &dashboardJSON{file: f}
		if err := json.Unmarshal(b, d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, d)
	}
	return out
}

// panelExpr is the first query of the panel titled title.
func (d *dashboardJSON) panelExpr(t *testing.T, title string) string {
	for _, p := range d.Panels {
		if p.Title == title && len(p.Targets) > 0 {
			return p.Targets[0].Expr
		}
	}
	t.Fatalf("%s: no panel %q", d.file, title)
	return ""
}

// checkRatesAgree polls (bounded) until the Overview's per-tag request rate
// is within 25 % of the rate the generators achieved over the same window,
// and its 5xx and 4xx ratios are 0.2 ± 0.04, for every tag.
func (n *nginxEnv) checkRatesAgree(prom *promServer, overview *dashboardJSON, vars map[string]string, gens []*generator, start time.Time, errs <-chan error) {
	t := n.t
	t.Helper()
	rateQ := substitute(overview.panelExpr(t, "Requests/s per source tag"), vars)
	ratioQ := map[string]string{
		"5xx": substitute(overview.panelExpr(t, "5xx ratio per source tag"), vars),
		"4xx": substitute(overview.panelExpr(t, "4xx ratio per source tag"), vars),
	}
	var problems []string
	deadline := start.Add(rateInterval + 40*time.Second)
	for {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		now := time.Now()
		if now.Sub(start) > rateInterval+2*time.Second { // the window holds steady traffic only
			problems = n.ratesProblems(prom, rateQ, ratioQ, gens, now)
			if len(problems) == 0 {
				return
			}
		}
		if now.After(deadline) {
			t.Fatalf("Overview panels disagree with the traffic sent:\n  %s", strings.Join(problems, "\n  "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (n *nginxEnv) ratesProblems(prom *promServer, rateQ string, ratioQ map[string]string, gens []*generator, now time.Time) []string {
	sent := map[string]float64{}
	for _, g := range gens {
		sent[g.tag] += float64(g.since(now.Add(-rateInterval))) / rateInterval.Seconds()
	}
	var problems []string
	got, err := prom.query(rateQ)
	if err != nil {
		return []string{err.Error()}
	}
	seen := map[string]float64{}
	for _, s := range got {
		seen[s.Labels["source_tag"]] = s.Value
	}
	for tag, want := range sent {
		if v, ok := seen[tag]; !ok || math.Abs(v-want) > 0.25*want {
			problems = append(problems, fmt.Sprintf("Requests/s per source tag %s: %.2f, sent %.2f/s", tag, v, want))
		}
	}
	for cls, q := range ratioQ {
		got, err := prom.query(q)
		if err != nil {
			return append(problems, err.Error())
		}
		ratios := map[string]float64{}
		for _, s := range got {
			ratios[s.Labels["source_tag"]] = s.Value
		}
		for tag := range sent {
			if v, ok := ratios[tag]; !ok || math.Abs(v-0.2) > 0.04 {
				problems = append(problems, fmt.Sprintf("%s ratio per source tag %s: %.3f, sent 0.2", cls, tag, v))
			}
		}
	}
	return problems
}

// checkEveryPanel runs every variable and every panel query; retrying for a
// bounded time, each must return a number. Panels in the row repeated per
// source tag run once per tag; the VIP drill-down once per VIP.
func (n *nginxEnv) checkEveryPanel(prom *promServer, dashboards []*dashboardJSON, vars map[string]string, gens []*generator) {
	t := n.t
	t.Helper()
	// check is a query; for a variable, tags is the number of source tags
	// it must list.
	type check struct {
		name, expr string
		tags       int
	}
	tags, vipTags := map[string]bool{}, map[string]map[string]bool{}
	for _, g := range gens {
		tags[g.tag] = true
		if vipTags[g.vip] == nil {
			vipTags[g.vip] = map[string]bool{}
		}
		vipTags[g.vip][g.tag] = true
	}
	var checks []check
	var varChecks []check
	for _, d := range dashboards {
		variants := []map[string]string{vars}
		if d.file == "ipng-stats-vip.json" {
			variants = nil
			for _, vip := range []string{n.topo.VIP4.String(), n.topo.VIP6.String()} {
				v := maps.Clone(vars)
				v["$vip"] = vip
				variants = append(variants, v)
			}
		}
		for _, vs := range variants {
			wantTags := len(tags)
			if vt := vipTags[vs["$vip"]]; vt != nil {
				wantTags = len(vt)
			}
			for _, v := range d.Templating.List {
				if v.Type == "query" {
					varChecks = append(varChecks, check{fmt.Sprintf("%s: variable %s", d.file, v.Name), substitute(v.Query, vs), wantTags})
				}
			}
			repeat := ""
			for _, p := range d.Panels {
				if p.Type == "row" {
					repeat = p.Repeat
					continue
				}
				for _, tg := range p.Targets {
					name := fmt.Sprintf("%s: panel %q query %s", d.file, p.Title, tg.RefID)
					if repeat != "source_tag" {
						checks = append(checks, check{name, substitute(tg.Expr, vs), 0})
						continue
					}
					for tag := range tags {
						v := maps.Clone(vs)
						v["$source_tag"] = tag
						checks = append(checks, check{name + " (row " + tag + ")", substitute(tg.Expr, v), 0})
					}
				}
			}
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.*), (\w+)\)$`)
	pending := append(varChecks, checks...)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var failed []check
		var why []string
		for _, c := range pending {
			var ok bool
			var err error
			if m := labelValues.FindStringSubmatch(c.expr); m != nil && strings.Contains(c.name, "variable") {
				var values []string
				values, err = prom.labelValues(m[1], m[2])
				ok = len(values) > 0
				if m[2] == "source_tag" && len(values) != c.tags {
					ok, err = false, fmt.Errorf("values %v, want %d tags", values, c.tags)
				}
			} else {
				var s []promSample
				s, err = prom.query(c.expr)
				ok = hasData(s)
			}
			if !ok {
				failed = append(failed, c)
				why = append(why, fmt.Sprintf("%s returned nothing (%v): %s", c.name, err, c.expr))
			}
		}
		if len(failed) == 0 {
			t.Logf("%d panel queries and %d variables returned data", len(checks), len(varChecks))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d queries returned no data:\n  %s", len(failed), len(pending), strings.Join(why, "\n  "))
		}
		pending = failed
		time.Sleep(500 * time.Millisecond)
	}
}

// checkRecordingRules: every recording rule of the bundle has data, the
// recorded 5xx ratio per tag is the 0.2 sent (the whole run, warm-up
// included, follows trafficCycle), and no rule of the group failed to
// evaluate.
func (n *nginxEnv) checkRecordingRules(prom *promServer, tags map[string]bool) {
	t := n.t
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct{ Record, Alert string }
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	records := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records[r.Record] = true
			}
		}
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		for r := range records {
			if s, err := prom.query(r); err != nil || !hasData(s) {
				t.Logf("recording rule %s: no data yet (%v)", r, err)
				return false
			}
		}
		return true
	}, "every recording rule to have data")
	s, err := prom.query("instance_source_tag:ipng_requests_5xx:ratio_rate5m")
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != len(tags) {
		t.Errorf("recorded 5xx ratio for %d tags, want %d: %v", len(s), len(tags), s)
	}
	for _, x := range s {
		if !tags[x.Labels["source_tag"]] || math.Abs(x.Value-0.2) > 0.04 {
			t.Errorf("recorded 5xx ratio %v = %.3f, sent 0.2", x.Labels, x.Value)
		}
	}
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct{ Name, Health, LastError string }
			}
		}
	}
	if err := prom.get("/api/v1/rules", &rules); err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			count++
			if r.Health != "ok" {
				t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if count == 0 {
		t.Error("prometheus loaded no rules")
	}
}
