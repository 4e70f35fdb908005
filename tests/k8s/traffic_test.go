//go:build k8s

package k8s

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Inside the cluster's netns: the agent's proxy listens on the VIP, on the
// tagged interface edge0, whose veth peer is in a client netns.
const (
	vip      = "192.0.2.1"
	clientIP = "192.0.2.2"
	edgeTag  = "edge"
)

// inNetns runs fn on a thread switched into the netns; sockets fn creates
// stay in it.
func inNetns(netns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + netns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns: %w", err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns back: %w", err) // the thread stays locked and dies
	}
	runtime.UnlockOSThread()
	return fnErr
}

// edge adds the client netns and its veth to the cluster's netns.
func (c *cluster) edge(t *testing.T) string {
	client := c.id + "c"
	c.must("ip", "netns", "add", client)
	t.Cleanup(func() { _ = osexec.Command("ip", "netns", "del", client).Run() })
	c.ns("ip", "link", "add", "edge0", "type", "veth", "peer", "name", "cli0", "netns", client)
	c.ns("ip", "addr", "add", vip+"/24", "dev", "edge0")
	c.ns("ip", "addr", "add", tagVIP+"/24", "dev", "edge0") // the tag server's
	c.ns("ip", "link", "set", "edge0", "up")
	c.must("ip", "-n", client, "link", "set", "lo", "up")
	c.must("ip", "-n", client, "addr", "add", clientIP+"/24", "dev", "cli0")
	c.must("ip", "-n", client, "link", "set", "cli0", "up")
	return client
}

// upstream serves 200 "ok" on 127.0.0.1:8081 in the cluster's netns.
func (c *cluster) upstream(t *testing.T) {
	var ln net.Listener
	if err := inNetns(c.netns, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:8081")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// clientGet does one GET from the client netns.
func clientGet(client, url string) (int, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: dialIn(client)}
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: tr}).Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// sample sums the samples of a metric whose labels include every
// name="value" pair given.
func sample(metrics, name string, labels ...string) (float64, bool) {
	var sum float64
	found := false
	for _, l := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		all := true
		for _, lb := range labels {
			all = all && strings.Contains(l, lb)
		}
		if !all {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	return sum, found
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
