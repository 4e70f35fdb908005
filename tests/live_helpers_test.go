package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// liveEnv is an agent carrying real traffic for the live views (status
// page, `ipng-stats top`): the agent runs the proxy (BPF attribution, in the
// test cgroup) and serves metrics on base, 127.0.0.1:9113 inside srv, where
// the browser and the terminal run too (srv has no default route, so nothing
// they send can leave the sandbox).
type liveEnv struct {
	*proxyEnv
	agent *proc
	base  string // the agent's metrics address, inside srv
}

func newLiveEnv(t *testing.T) *liveEnv {
	t.Helper()
	e := &liveEnv{proxyEnv: &proxyEnv{env: newEnv(t, "")}}
	e.down = e.distinctPorts(1, e.port, 9113)[0]
	e.web = 9113
	e.backend = proxyBackend(t, e.topo, "a")
	e.writeProxyConfig(strings.Replace(proxyYAML, "proxy:\n", "proxy:\n  enabled: true\n", 1))
	e.agent = e.start("agent", e.topo.Srv.Exec(context.Background(), agentBin, "agent", "--config", e.cfgPath,
		"--bpf.cgroup", e.cg.Path, "--bpf.pin-dir", e.pinDir, "--attribution.mode", "bpf",
		"--web.listen-address", "127.0.0.1:9113"), true)
	e.agent.awaitRunning(t, `msg="agent running"`)
	e.base = "http://127.0.0.1:9113"
	return e
}

// send makes n requests for /status/code through the proxy from ns (IPv4)
// on new connections.
func (e *liveEnv) send(ns *topo.NS, code, n int) {
	e.t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: ns.Dial, DisableKeepAlives: true}}
	for range n {
		resp, err := c.Get(e.url("ipv4", e.port, fmt.Sprintf("/status/%d", code)))
		if err != nil {
			e.t.Fatalf("%s: %v", ns.Role(), err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != code {
			e.t.Fatalf("%s: status %d, want %d", ns.Role(), resp.StatusCode, code)
		}
	}
}

// traffic sends 6 requests from c1 (tag1: 5×200, 1×404) and 3 from c2
// (tag2-v4, of which errors5xx are 500s) to the IPv4 VIP, waits until the
// agent counts them, and returns the VIP.
func (e *liveEnv) traffic(errors5xx int) string {
	e.t.Helper()
	vip := e.topo.VIP4.String()
	e.send(e.topo.C1, 200, 5)
	e.send(e.topo.C1, 404, 1)
	e.send(e.topo.C2, 200, 3-errors5xx)
	e.send(e.topo.C2, 500, errors5xx)
	e.waitRequests(map[string]uint64{"tag1 " + vip: 6, "tag2-v4 " + vip: 3})
	return vip
}

// waitRequests waits until the agent's JSON counts want requests per
// "tag vip" of the topology's VIPs (the agent also counts the connections
// to its own metrics port on 127.0.0.1, which is in the test cgroup).
func (e *liveEnv) waitRequests(want map[string]uint64) {
	e.t.Helper()
	fixtures.WaitCounts(e.t, 15*time.Second, "agent's requests per series", func() (map[string]uint64, error) {
		d, err := e.stats()
		if err != nil {
			return nil, err
		}
		got := map[string]uint64{}
		for _, s := range d.Series {
			if s.VIP == e.topo.VIP4.String() || s.VIP == e.topo.VIP6.String() {
				got[s.SourceTag+" "+s.VIP] = s.Summary.Requests
			}
		}
		return got, nil
	}, want)
}
