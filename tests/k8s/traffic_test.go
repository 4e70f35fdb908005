//go:build k8s

package k8s

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// Inside the cluster's netns: the agent's proxy listens on the VIP, on the
// tagged interface edge0, whose veth peer is in a client netns.
const (
	vip      = "192.0.2.1"
	clientIP = "192.0.2.2"
	edgeTag  = "edge"
)

// edge adds the client netns (the cluster's id + "c") and its veth to the
// cluster's netns.
func (c *cluster) edge(t *testing.T) *testenv.NS {
	client, err := testenv.CreateNS(c.id + "c")
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
	c.netns.Run(t, "link", "add", "edge0", "type", "veth", "peer", "name", "cli0", "netns", client.Name)
	c.netns.Run(t, "addr", "add", vip+"/24", "dev", "edge0")
	c.netns.Run(t, "addr", "add", tagVIP+"/24", "dev", "edge0") // the tag server's
	c.netns.Run(t, "link", "set", "edge0", "up")
	client.Run(t, "link", "set", "lo", "up")
	client.Run(t, "addr", "add", clientIP+"/24", "dev", "cli0")
	client.Run(t, "link", "set", "cli0", "up")
	return client
}

// upstream serves 200 "ok" on 127.0.0.1:8081 in the cluster's netns.
func (c *cluster) upstream(t *testing.T) {
	ln, err := c.netns.Listen("tcp", "127.0.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
