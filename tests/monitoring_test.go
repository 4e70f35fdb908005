package tests

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// The committed monitoring bundle (make generate).
const (
	bundleDir = "../deploy/monitoring"
	rulesFile = bundleDir + "/prometheus/ipng-stats.rules.yaml"
	// rateInterval stands for Grafana's $__rate_interval: with a datasource
	// scrape interval of 1 s, Grafana uses max(4 × 1 s, $__interval + 1 s);
	// 8 s is what a range of about a quarter of an hour gives.
	rateInterval = 8 * time.Second
)

var bundleDashboards = []string{"ipng-stats-overview.json", "ipng-stats-vip.json", "ipng-stats-agent-health.json"}

// trafficCycle is the status sequence every generator repeats: 20 % 5xx,
// 20 % 4xx.
var trafficCycle = []int{200, 200, 404, 200, 503}

// generator sends requests over one path to nginx or the proxy and keeps
// the completion time of each.
type generator struct {
	name, tag, vip string
	get            func(code int) error
	mu             sync.Mutex
	done           []time.Time
}

func (g *generator) cycle() error {
	for _, code := range trafficCycle {
		if err := g.get(code); err != nil {
			return fmt.Errorf("%s: %w", g.name, err)
		}
		g.mu.Lock()
		g.done = append(g.done, time.Now())
		g.mu.Unlock()
	}
	return nil
}

// since counts the requests completed after t.
func (g *generator) since(t time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.done) - sort.Search(len(g.done), func(i int) bool { return g.done[i].After(t) })
}

// TestMonitoringBundle proves the dashboards and rules on real data: the
// agent runs the nginx ingest and the proxy in the attached cgroup, clients
// send traffic over four tagged interfaces (eth1, eth2 per family, the
// tunnel, and the unbound macvlan) to nginx and the proxy, Debian's
// Prometheus scrapes the agent every second and evaluates the generated
// rules. Every panel's query of every dashboard (template variables
// substituted with real values, per tag in the repeated row), every
// variable and every recording rule returns data; the per-tag request rate
// and 5xx ratio panels agree with the traffic sent; no rule fails to
// evaluate.
func TestMonitoringBundle(t *testing.T) {
	n := setupNginxEnv(t, 1, "")
	ports := n.distinctPorts(3, n.port, n.dsPort, n.statePort, 9113, 9114)
	proxyPort, web, promPort := ports[0], ports[1], ports[2]
	backend := proxyBackend(t, n.topo, "a")
	yml := bindingsYAML + fmt.Sprintf(`nginx:
  enabled: true
  log_file: %s
  poll_interval: 20ms
proxy:
  enabled: true
  listeners:
    - address: ":%d"
      upstream: web
  upstreams:
    - name: web
      servers: [%q]
handshakes:
  ports: [%d, %d]
`, n.logFile, proxyPort, backend, n.port, proxyPort)
	if err := os.WriteFile(n.cfgPath, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	target := fmt.Sprintf("127.0.0.1:%d", web)
	// In the cgroup: the proxy's listeners are the agent's own sockets.
	agent := n.start("agent", n.topo.Srv.Exec(context.Background(), agentBin, "agent", "--config", n.cfgPath,
		"--bpf.cgroup", n.cg.Path, "--bpf.pin-dir", n.pinDir, "--attribution.mode", "bpf",
		"--web.listen-address", target), true)
	agent.awaitRunning(t, `msg="agent running"`)
	n.startNginx()
	prom := n.startPrometheus(promPort, target, rulesFile)

	gens := n.monitoringGenerators(proxyPort)
	tags := map[string]bool{}
	for _, g := range gens {
		tags[g.tag] = true
		if err := g.cycle(); err != nil { // every tag and code class exists
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		s, err := prom.query(`count by (source_tag, code) (ipng_requests_total{code=~"2xx|4xx|5xx"})`)
		return err == nil && len(s) == 3*len(tags)
	}, "prometheus to scrape every tag and code class")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, len(gens))
	for _, g := range gens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := g.cycle(); err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				time.Sleep(100 * time.Millisecond) // pace: about 40 requests/s per generator
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()
	start := time.Now()

	dashboards := loadDashboards(t)
	vars := n.monitoringVars(target, tags)
	n.checkRatesAgree(prom, dashboards[0], vars, gens, start, errs)
	n.checkEveryPanel(prom, dashboards, vars, gens)
	n.checkRecordingRules(prom, tags)
	n.checkAlerts(prom, tags)
}

// checkAlerts: on this healthy agent, the 20 % of 5xx the clients get
// makes both burn-rate alerts pending for every tag (their `for` keeps
// them from firing within the test), and no alert about the agent itself
// is pending or firing.
func (n *nginxEnv) checkAlerts(prom *promServer, tags map[string]bool) {
	t := n.t
	t.Helper()
	for _, name := range []string{"IpngStats5xxBudgetBurnFast", "IpngStats5xxBudgetBurnSlow"} {
		testenv.Eventually(t, 15*time.Second, func() bool {
			s, err := prom.query(`ALERTS{alertname="` + name + `"}`)
			return err == nil && len(s) == len(tags)
		}, "%s for every tag", name)
	}
	quiet := `ALERTS{alertname=~"IpngStatsAgentDown|IpngStatsAgentAbsent|IpngStatsBPFNotAttached|IpngStatsBPFEventsFailing|` +
		`IpngStatsAttributionFallingBack|IpngStatsNginxTupleMisses|IpngStatsNginxBacklogGrowing|IpngStatsNginxSpoolFull|` +
		`IpngStatsOutcomesRejected|IpngStatsSeriesNearCap|IpngStatsSeriesCapReached|IpngStatsLatencyP99High|IpngStatsHandshakesFailing"}`
	s, err := prom.query(quiet)
	if err != nil || len(s) > 0 {
		t.Errorf("alerts about a healthy agent (%v): %v", err, s)
	}
}

// monitoringGenerators: nginx and the proxy over every tagged path and both
// families.
func (n *nginxEnv) monitoringGenerators(proxyPort int) []*generator {
	var gens []*generator
	add := func(p path, fam string, viaProxy bool) {
		tag := expectedTag(p.dev, fam)
		ns := p.ns(n.topo)
		g := &generator{tag: tag, vip: n.vipLabel(fam)}
		if viaProxy {
			g.name = fmt.Sprintf("proxy %s %s", p.name, fam)
			g.get = n.proxyGetter(ns, fam, proxyPort)
		} else {
			g.name = fmt.Sprintf("nginx %s %s", p.name, fam)
			g.get = n.client(ns, fam, n.port).get
		}
		gens = append(gens, g)
	}
	c1, c2, lb, c4 := paths[0], paths[1], paths[2], paths[3]
	add(c1, "ipv4", false)
	add(c1, "ipv6", true)
	add(c2, "ipv4", false)
	add(c2, "ipv6", true)
	add(lb, "ipv6", false)
	add(lb, "ipv4", true)
	add(c4, "ipv6", false)
	add(c4, "ipv4", true)
	return gens
}

// proxyGetter requests /status/<code> through the proxy from ns over one
// kept-alive connection.
func (n *nginxEnv) proxyGetter(ns *topo.NS, fam string, port int) func(int) error {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DialContext: ns.Dial}
	n.t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	base := (&proxyEnv{env: n.env}).url(fam, port, "")
	return func(code int) error { return getStatus(c, fmt.Sprintf("%s/status/%d", base, code), code) }
}
