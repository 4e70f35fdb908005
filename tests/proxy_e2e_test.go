package tests

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

const proxyYAML = `
proxy:
  listeners:
    - address: ":%PORT%"
      upstream: web
    - address: ":%DOWN%"
      upstream: down
  upstreams:
    - name: web
      servers: ["%BACKEND%"]
    - name: down
      servers: ["127.0.0.1:1"]
  timeouts:
    read_header: 500ms
  max_header_bytes: 4096
`

// TestProxyCounts: clients on every interface and family (IPv4, IPv6 and a
// v4-mapped dual-stack socket) send 2xx, 4xx and
// 5xx through the proxy, and one request each to an upstream that is down
// (502); every (tag, vip, code) is counted exactly. Malformed requests get
// 400 and 431, slow ones 408 (on the wire too), and are counted; the proxy
// stays up.
func TestProxyCounts(t *testing.T) {
	for _, mode := range []string{"fallback", "bpf"} {
		t.Run(mode, func(t *testing.T) { testProxyCounts(t, mode) })
	}
}

func testProxyCounts(t *testing.T, mode string) {
	e := newProxyEnvMode(t, proxyYAML, mode)
	vips := map[string]string{"ipv4": e.topo.VIP4.String(), "ipv6": e.topo.VIP6.String()}
	clients := []struct {
		ns  *topo.NS
		dev string
	}{{e.topo.C1, "eth1"}, {e.topo.C2, "eth2"}, {e.topo.C4, "mv0"}, {e.topo.LB, "tun0"}, {e.topo.Client, "tun0"}}
	want := map[string]uint64{}
	for _, cl := range clients {
		c := proxyClient(cl.ns)
		for _, fam := range []string{"ipv4", "ipv6"} {
			key := expectedTag(cl.dev, fam) + " " + vips[fam] + " "
			for _, req := range []struct {
				port   int
				path   string
				status int
			}{{e.port, "/status/200", 200}, {e.port, "/status/204", 204}, {e.port, "/status/200", 200},
				{e.port, "/status/404", 404}, {e.port, "/status/403", 403}, {e.port, "/status/500", 500},
				{e.down, "/", 502}} {
				resp, err := c.Get(e.url(fam, req.port, req.path))
				if err != nil {
					t.Fatalf("%s %s %s: %v", cl.ns.Role(), fam, req.path, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != req.status {
					t.Errorf("%s %s %s: status %d, want %d", cl.ns.Role(), fam, req.path, resp.StatusCode, req.status)
				}
				want[key+fmt.Sprintf("%dxx", req.status/100)]++
			}
		}
		c.CloseIdleConnections()
		// A dual-stack client: AF_INET6 socket to the v4-mapped VIP.
		mc, err := dialMapped(cl.ns, netip.AddrFrom16(e.topo.VIP4.As16()), e.port)
		if err != nil {
			t.Fatalf("%s mapped: %v", cl.ns.Role(), err)
		}
		io.WriteString(mc, "GET /status/200 HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
		mc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, _ := bufio.NewReader(mc).ReadString('\n'); line != "HTTP/1.1 200 OK\r\n" {
			t.Errorf("%s mapped: %q", cl.ns.Role(), line)
		}
		mc.Close()
		want[expectedTag(cl.dev, "ipv4")+" "+vips["ipv4"]+" 2xx"]++
	}
	e.waitCounts(want)

	// Malformed requests from c1 over IPv4.
	key := "tag1 " + vips["ipv4"] + " 4xx"
	for _, tc := range []struct{ req, want string }{
		{"NOT A REQUEST\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
		// slowloris: never finishes its headers (or its request line) within
		// read_header: 408 on the wire, like the count.
		{"GET / HTTP/1.1\r\nHost: x\r\n", "HTTP/1.1 408 Request Timeout"},
		{"GET /stat", "HTTP/1.1 408 Request Timeout"},
	} {
		c := e.rawDial(e.topo.C1)
		io.WriteString(c, tc.req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if strings.TrimSpace(line) != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.req[:min(len(tc.req), 10)], line, err, tc.want)
		}
		c.Close()
		want[key]++
	}
	e.waitCounts(want)
	if resp, err := proxyClient(e.topo.C1).Get(e.url("ipv4", e.port, "/status/200")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("proxy not serving after malformed requests: %v", err)
	}
}

// TestProxySlowClient: a client that sends its headers slowly shows in
// requests_reading, one that does not read a large response in
// requests_writing, while the request is in progress.
func TestProxySlowClient(t *testing.T) {
	e := newProxyEnv(t, strings.Replace(proxyYAML, "read_header: 500ms", "read_header: 10s", 1))
	c := e.rawDial(e.topo.C1)
	io.WriteString(c, "GET /status/200 HTTP/1.1\r\n")
	testenv.Eventually(t, 5*time.Second, func() bool { return e.gauge(false) > 0 }, "requests_reading > 0")
	io.WriteString(c, "Host: x\r\nConnection: close\r\n\r\n")
	io.Copy(io.Discard, c)
	testenv.Eventually(t, 5*time.Second, func() bool { return e.gauge(false) == 0 }, "requests_reading = 0")

	c = e.rawDial(e.topo.C2)
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	testenv.Eventually(t, 5*time.Second, func() bool { return e.gauge(true) > 0 }, "requests_writing > 0")
	n, _ := io.Copy(io.Discard, c)
	if n < 32<<20 {
		t.Errorf("read %d bytes of /big", n)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return e.gauge(true) == 0 }, "requests_writing = 0")
	e.waitCounts(map[string]uint64{"tag1 192.0.2.10 2xx": 1, "tag2-v4 192.0.2.10 2xx": 1})
}

// TestProxyReloadAndDrain: SIGHUPs under steady keep-alive load (switching
// the upstream and the timeouts) fail no request and lose no count;
// SIGTERM lets a request in progress finish.
func TestProxyReloadAndDrain(t *testing.T) {
	e := newProxyEnv(t, proxyYAML)
	second := proxyBackend(t, e.topo, "b")
	var (
		wg       sync.WaitGroup
		ok, fail atomic.Uint64
		okBy     [2]atomic.Uint64
		stop     atomic.Bool
		seenB    atomic.Bool
	)
	for k, ns := range []*topo.NS{e.topo.C1, e.topo.C2} {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := proxyClient(ns)
				defer c.CloseIdleConnections()
				for i := 0; i < 100000 && !stop.Load(); i++ {
					resp, err := c.Get(e.url("ipv4", e.port, "/status/200"))
					if err != nil {
						fail.Add(1)
						t.Errorf("request failed: %v", err)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						fail.Add(1)
						continue
					}
					if resp.Header.Get("X-Backend") == "b" {
						seenB.Store(true)
					}
					ok.Add(1)
					okBy[k].Add(1)
				}
			}()
		}
	}
	time.Sleep(300 * time.Millisecond)
	for i, y := range []string{
		strings.Replace(proxyYAML, `["%BACKEND%"]`, `["`+second+`"]`, 1),
		strings.Replace(strings.Replace(proxyYAML, `["%BACKEND%"]`, `["`+second+`"]`, 1), "read_header: 500ms", "read_header: 2s\n    idle: 1s", 1),
	} {
		e.writeProxyConfig(y)
		e.proc.cmd.Process.Signal(syscall.SIGHUP)
		testenv.Eventually(t, 5*time.Second, func() bool {
			return strings.Count(e.proc.out.String(), `msg="configuration reloaded"`) == i+1
		}, "reload")
		time.Sleep(300 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if fail.Load() != 0 || ok.Load() == 0 || !seenB.Load() {
		t.Fatalf("ok %d, failed %d, switched upstream %v", ok.Load(), fail.Load(), seenB.Load())
	}
	t.Logf("%d requests during two reloads, none failed", ok.Load())
	e.waitCounts(map[string]uint64{"tag1 192.0.2.10 2xx": okBy[0].Load(), "tag2-v4 192.0.2.10 2xx": okBy[1].Load()})

	// SIGTERM while a request is in progress: it completes, then the
	// proxy exits cleanly.
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := proxyClient(e.topo.C1).Get(e.url("ipv4", e.port, "/slow"))
		if err != nil {
			done <- result{0, err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, nil}
	}()
	testenv.Eventually(t, 5*time.Second, func() bool { return e.gauge(true) > 0 }, "request in progress")
	e.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case r := <-done:
		if r.err != nil || r.status != 200 {
			t.Errorf("request during drain: %d %v", r.status, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request during drain did not finish")
	}
	select {
	case <-e.proc.done:
		if e.proc.err != nil {
			t.Errorf("proxy exit: %v", e.proc.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not exit after SIGTERM")
	}
}
