package tests

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
)

// TestProxyThroughAgent: the proxy as the agent runs it (proxy.enabled),
// in the attached cgroup with BPF attribution: requests count exactly per
// (tag, vip, code), and each connection is counted once, by the program in
// the kernel (its per-CPU connection counters), not a second time by the
// proxy.
func TestProxyThroughAgent(t *testing.T) {
	e := newAgentProxy(t, "")
	requests, conns := map[string]uint64{}, map[string]uint64{}
	for _, r := range []struct {
		p      path
		fam    string
		path   string
		status int
	}{{paths[0], "ipv4", "/status/200", 200}, {paths[0], "ipv6", "/status/404", 404}, {paths[2], "ipv4", "/status/500", 500}, {paths[4], "ipv6", "/status/200", 200}} {
		for range 3 {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: r.p.ns(e.topo).Dial, DisableKeepAlives: true}}
			resp, err := c.Get(e.url(r.fam, e.port, r.path))
			if err != nil {
				t.Fatalf("%s %s: %v", r.p.name, r.fam, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != r.status {
				t.Errorf("%s %s %s: %d", r.p.name, r.fam, r.path, resp.StatusCode)
			}
			vip := e.topo.VIP4.String()
			if r.fam == "ipv6" {
				vip = e.topo.VIP6.String()
			}
			key := expectedTag(r.p.dev, r.fam) + " " + vip
			requests[key+" "+fmt.Sprintf("%dxx", r.status/100)]++
			conns[key]++
		}
	}
	testenv.EventuallyNil(t, 10*time.Second, "agent's counts", func() error {
		gotReq, gotConns, err := agentCounts(e.env)
		if err != nil || !maps.Equal(gotReq, requests) || !maps.Equal(gotConns, conns) {
			return fmt.Errorf("(%v)\n requests %v\n want     %v\n connections %v\n want        %v", err, gotReq, requests, gotConns, conns)
		}
		return nil
	})
}

// newAgentProxy runs the agent with the proxy enabled (extra is more YAML
// for its configuration) in the attached cgroup with BPF attribution, its
// metrics on 127.0.0.1:9113 in srv.
func newAgentProxy(t *testing.T, extra string) *proxyEnv {
	e := &proxyEnv{env: newEnv(t, "")}
	e.down = e.distinctPorts(1, e.port, 9113)[0]
	e.backend = proxyBackend(t, e.topo, "a")
	e.writeProxyConfig(extra + strings.Replace(proxyYAML, "proxy:\n", "proxy:\n  enabled: true\n", 1))
	agent := e.start("agent", e.topo.Srv.Exec(context.Background(), agentBin, "agent", "--config", e.cfgPath,
		"--bpf.cgroup", e.cg.Path, "--bpf.pin-dir", e.pinDir, "--attribution.mode", "bpf",
		"--web.listen-address", "127.0.0.1:9113"), true)
	agent.awaitRunning(t, `msg="agent running"`)
	// "agent running" may come before the metrics listener is up.
	testenv.Eventually(t, 10*time.Second, func() bool { _, err := e.statsDoc(); return err == nil }, "metrics served")
	e.proc = agent
	return e
}

// TestProxyOverflowOncePerConnection: with the series cap reached, each
// connection to the proxy in the agent is folded into the overflow series
// and counted once in ipng_series_overflow_total (docs/metrics.md), though
// both the agent's connection counts (the program's series in the kernel)
// and the proxy's request counts look it up.
func TestProxyOverflowOncePerConnection(t *testing.T) {
	e := newAgentProxy(t, "metrics:\n  max_series: 1\n")
	// The first connection, a scrape (newAgentProxy's), took the only series.
	first, err := e.statsDoc()
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	for range n {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: e.topo.C1.Dial, DisableKeepAlives: true}}
		resp, err := c.Get(e.url("ipv4", e.port, "/status/200"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var doc *exporter.Document
	testenv.Eventually(t, 10*time.Second, func() bool {
		doc, err = e.statsDoc()
		if err != nil {
			return false
		}
		for _, s := range doc.Series {
			if s.SourceTag == "tag1" && s.Codes["2xx"].Requests == n {
				return true
			}
		}
		return false
	}, "the proxied requests counted")
	if got := doc.Meta.SeriesOverflow - first.Meta.SeriesOverflow; got != n {
		t.Errorf("ipng_series_overflow_total rose by %d for %d connections, want %d", got, n, n)
	}
}

// agentCounts reads requests per "tag vip code" and connections per
// "tag vip" (the connections to the proxy's VIPs only) from the agent.
func agentCounts(e *env) (map[string]uint64, map[string]uint64, error) {
	doc, err := e.statsDoc()
	if err != nil {
		return nil, nil, err
	}
	vips := []string{e.topo.VIP4.String(), e.topo.VIP6.String()}
	conns, _ := fixtures.DocConnections(doc, vips...)
	return fixtures.DocRequests(doc, vips...), conns, nil
}
