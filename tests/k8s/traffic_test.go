//go:build k8s

package k8s

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// Inside the cluster's netns: the agent's proxy listens on the VIP, on the
// tagged interface edge0, whose veth peer is in a client netns, and on an
// IPv6 VIP on a second tagged interface, core0, whose veth peer is in a
// second client netns. That one reaches the IPv4 VIP too, through core0:
// the same VIP under two tags, told apart only by the interface.
const (
	vip      = "192.0.2.1"
	clientIP = "192.0.2.2"
	edgeTag  = "edge"

	coreTag      = "core"
	coreIP       = "198.51.100.1" // core0's, the core client's gateway to vip
	coreClientIP = "198.51.100.2"
	vip6         = "2001:db8:1::1" // on core0
	coreClient6  = "2001:db8:1::2"
)

// clientNS creates a client netns named the cluster's id + suffix, removed
// at the end of the test.
func (c *cluster) clientNS(t *testing.T, suffix string) *testenv.NS {
	client, err := testenv.CreateNS(c.id + suffix)
	if client != nil {
		t.Cleanup(func() {
			if err := client.Remove(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// edge adds the client netns (the cluster's id + "c") and its veth to the
// cluster's netns.
func (c *cluster) edge(t *testing.T) *testenv.NS {
	client := c.clientNS(t, "c")
	c.netns.Run(t, "link", "add", "edge0", "type", "veth", "peer", "name", "cli0", "netns", client.Name)
	c.netns.Run(t, "addr", "add", vip+"/24", "dev", "edge0")
	c.netns.Run(t, "addr", "add", tagVIP+"/24", "dev", "edge0") // the tag server's
	c.netns.Run(t, "link", "set", "edge0", "up")
	client.Run(t, "link", "set", "lo", "up")
	client.Run(t, "addr", "add", clientIP+"/24", "dev", "cli0")
	client.Run(t, "link", "set", "cli0", "up")
	return client
}

// core adds the second client netns (the cluster's id + "d") and its veth,
// core0 in the cluster's netns, with an IPv4 and an IPv6 address; the
// client's route to vip goes through core0.
func (c *cluster) core(t *testing.T) *testenv.NS {
	client := c.clientNS(t, "d")
	c.netns.Run(t, "link", "add", "core0", "type", "veth", "peer", "name", "cli0", "netns", client.Name)
	c.netns.Run(t, "addr", "add", coreIP+"/24", "dev", "core0")
	c.netns.Run(t, "addr", "add", vip6+"/64", "dev", "core0")
	c.netns.Run(t, "link", "set", "core0", "up")
	client.Run(t, "link", "set", "lo", "up")
	client.Run(t, "addr", "add", coreClientIP+"/24", "dev", "cli0")
	client.Run(t, "addr", "add", coreClient6+"/64", "dev", "cli0")
	client.Run(t, "link", "set", "cli0", "up")
	client.Run(t, "route", "add", vip+"/32", "via", coreIP)
	return client
}

// upstream serves 200 "ok" on 127.0.0.1:8081 in the cluster's netns, and
// 404 for /missing.
func (c *cluster) upstream(t *testing.T) {
	ln, err := c.netns.Listen("tcp", "127.0.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// clientGet does one GET from the client netns.
func clientGet(client *testenv.NS, url string) (int, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: client.Dial}
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: tr}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// scrape is what a Prometheus scraping the agent pod gets: host network, so
// the node address and the chart's port.
func (c *cluster) scrape() (string, error) {
	resp, err := c.httpClient().Get("http://" + c.nodeIP + ":9113/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scrape: %s", resp.Status)
	}
	return string(b), nil
}

// flow is the traffic of one client netns to one VIP of the proxy, which
// the agent counts under tag: ok requests the upstream answers 200 (one of
// them the probe that waits for the proxy) and missing ones it answers 404.
type flow struct {
	client      *testenv.NS
	tag, vip    string
	ok, missing int
}

// flows is the test's traffic with edge0 tagged edge: over edge0 to vip;
// over core0 to vip (the same VIP, the other tag) and to vip6.
func flows(edge, core *testenv.NS, tag string) []flow {
	return []flow{
		{client: edge, tag: tag, vip: vip, ok: 8},
		{client: core, tag: coreTag, vip: vip, ok: 5, missing: 2},
		{client: core, tag: coreTag, vip: vip6, ok: 3, missing: 1},
	}
}

// traffic sends the flows' requests and waits until the agent's scrape has
// exactly their counts per (tag, vip, code) and no other request series.
func (c *cluster) traffic(flows []flow) {
	t := c.t
	t.Helper()
	want := map[string]float64{}
	for _, f := range flows {
		base := "http://" + net.JoinHostPort(f.vip, "8080")
		c.waitFor("proxy answers on "+f.vip+" for "+f.tag, time.Minute, func() error {
			code, err := clientGet(f.client, base+"/probe")
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			return err
		})
		for i := 1; i < f.ok+f.missing; i++ {
			path, status := "/", 200
			if i >= f.ok {
				path, status = "/missing", 404
			}
			if code, err := clientGet(f.client, base+path); err != nil || code != status {
				t.Fatalf("%s request %d to %s%s: %d %v, want %d", f.tag, i, base, path, code, err, status)
			}
		}
		want[f.tag+" "+f.vip+" 2xx"] += float64(f.ok)
		if f.missing > 0 {
			want[f.tag+" "+f.vip+" 4xx"] += float64(f.missing)
		}
	}
	c.waitFor("exact counts", time.Minute, func() error {
		m, err := c.scrape()
		if err != nil {
			return err
		}
		got := testenv.Samples(m, "ipng_requests_total", "source_tag", "vip", "code")
		var bad []string
		for k, w := range want {
			if got[k] != w {
				bad = append(bad, fmt.Sprintf("%s: %v, want %v", k, got[k], w))
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok && v != 0 {
				bad = append(bad, fmt.Sprintf("%s: %v, want none", k, v))
			}
		}
		if bad == nil {
			return nil
		}
		sort.Strings(bad)
		var lines []string
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "ipng_requests_total{") {
				lines = append(lines, l)
			}
		}
		return fmt.Errorf("ipng_requests_total (source_tag vip code): %s; all:\n%s", strings.Join(bad, "; "), strings.Join(lines, "\n"))
	})
}
