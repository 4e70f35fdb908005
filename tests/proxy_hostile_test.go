package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// proxyHostileYAML is the e2e proxy section with header and request
// timeouts a test can wait out.
var proxyHostileYAML = strings.Replace(proxyYAML, "read_header: 500ms", "read_header: 1s\n    request: 2s", 1)

// goroutines reads go_goroutines from the proxy's metrics port.
func (e *proxyEnv) goroutines() (int, error) { return e.metric("go_goroutines") }

// metricsText scrapes the proxy's metrics port.
func (e *proxyEnv) metricsText() (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: e.topo.Srv.Dial, DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.web))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// rejectedConns reads ipng_proxy_connections_rejected_total{reason}.
func (e *proxyEnv) rejectedConns(reason string) (int, error) {
	text, err := e.metricsText()
	if err != nil {
		return 0, err
	}
	v, ok := testenv.Samples(text, "ipng_proxy_connections_rejected_total", "reason")[reason]
	if !ok {
		return 0, fmt.Errorf("no ipng_proxy_connections_rejected_total{reason=%q}", reason)
	}
	return int(v), nil
}

// metric reads an unlabelled sample from the proxy's metrics port.
func (e *proxyEnv) metric(name string) (int, error) {
	text, err := e.metricsText()
	if err != nil {
		return 0, err
	}
	v, ok := testenv.Samples(text, name)[""]
	if !ok {
		return 0, fmt.Errorf("no %s", name)
	}
	return int(v), nil
}

// TestProxyHostileRequests: what a hostile client gets from the proxy's
// listener, each counted under the client's tag with the status it got
// (the 4xx series), and the proxy serving others meanwhile; a connection
// that sends nothing is closed at read_header and counted in
// ipng_proxy_connections_idle_closed_total.
func TestProxyHostileRequests(t *testing.T) {
	e := newProxyEnv(t, proxyHostileYAML)
	key := "tag1 " + e.topo.VIP4.String() + " 4xx"
	want := map[string]uint64{}
	for _, tc := range []struct {
		name string
		req  string
		slow string // then sent a byte every 100 ms until the answer
		want string
	}{
		{"malformed request line", "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", "", "HTTP/1.1 400 Bad Request"},
		{"binary garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "", "HTTP/1.1 400 Bad Request"},
		{"oversized request line", "GET /" + strings.Repeat("a", 64<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", "", "HTTP/1.1 414 Request URI Too Long"},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "", "HTTP/1.1 431 Request Header Fields Too Large"},
		{"slowloris headers", "GET / HTTP/1.1\r\n", "X-A: b\r\n", "HTTP/1.1 408 Request Timeout"},
		{"slowloris body", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "a", "HTTP/1.1 408 Request Timeout"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			c := e.rawDial(e.topo.C1)
			io.WriteString(c, tc.req)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if tc.slow != "" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tick := time.NewTicker(100 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
							if _, err := io.WriteString(c, tc.slow); err != nil {
								return
							}
						}
					}
				}()
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			close(stop)
			wg.Wait()
			if strings.TrimSpace(line) != tc.want {
				t.Errorf("got %q (%v), want %q", line, err, tc.want)
			}
			c.Close()
			want[key]++
			// Others are served meanwhile.
			if err := getStatus(proxyClient(e.topo.C2), e.url("ipv6", e.port, "/status/200"), 200); err != nil {
				t.Fatalf("proxy not serving: %v", err)
			}
			want["tag2-v6 "+e.topo.VIP6.String()+" 2xx"]++
			e.waitCounts(want)
		})
	}
	// Each of them sent bytes: none is an idle connection.
	if got, err := e.metric("ipng_proxy_connections_idle_closed_total"); err != nil || got != 0 {
		t.Errorf("ipng_proxy_connections_idle_closed_total = %d (%v), want 0", got, err)
	}
	// One that sends nothing is closed at read_header without an answer
	// (as nginx does), and counted there, in no per-tag series.
	c := e.rawDial(e.topo.C1)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("idle connection: read %d bytes, %v; want EOF", n, err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		got, err := e.metric("ipng_proxy_connections_idle_closed_total")
		return err == nil && got == 1
	}, "ipng_proxy_connections_idle_closed_total = 1")
	e.waitCounts(want)
}

// TestProxyTenThousandIdleConnections: 10 000 connections to the proxy
// that send nothing, with proxy.max_connections 64 (and a read_header
// longer than the flood). The proxy holds at most 64: each new connection
// closes the one quiet longest, counted in
// ipng_proxy_connections_rejected_total{reason="evicted"}; its goroutines
// stay within the bound; a request from another interface during the
// flood gets 200 (its connection evicts one more). Exactly the oldest
// 10 000 − 64 + 1 are closed (EOF), the rest stay open; once the client
// closes them, the goroutines are back where they were.
func TestProxyTenThousandIdleConnections(t *testing.T) {
	const limit = 64
	e := newProxyEnv(t, strings.Replace(proxyYAML, "read_header: 500ms", "read_header: 5m", 1)+fmt.Sprintf("  max_connections: %d\n", limit))
	base, err := e.goroutines()
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	addr := netip.AddrPortFrom(e.topo.VIP4, uint16(e.port)).String()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := e.topo.C1.Dial(ctx, "tcp4", addr)
		cancel()
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	pc := proxyClient(e.topo.C2)
	if err := getStatus(pc, e.url("ipv6", e.port, "/status/200"), 200); err != nil {
		t.Fatalf("proxy not serving during the flood: %v", err)
	}
	var evicted int
	testenv.Eventually(t, 20*time.Second, func() bool {
		evicted, err = e.rejectedConns("evicted")
		return err == nil && evicted >= n-limit+1
	}, "%d connections evicted", n-limit+1)
	during, _ := e.goroutines()
	if during > base+limit+50 {
		t.Errorf("%d goroutines with %d idle connections (limit %d), %d before", during, n, limit, base)
	}
	if got, err := e.metric("ipng_proxy_connections_open"); err != nil || got != limit {
		t.Errorf("ipng_proxy_connections_open = %d (%v), want %d", got, err, limit)
	}
	over, _ := e.rejectedConns("over_limit")
	if evicted != n-limit+1 || over != 0 {
		t.Errorf("evicted %d, over_limit %d: want %d and 0", evicted, over, n-limit+1)
	}
	// The oldest were evicted (EOF at once), the newest are open.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(map[bool]time.Duration{true: 20 * time.Second, false: 100 * time.Millisecond}[i <= n-limit]))
		_, err := c.Read(make([]byte, 1))
		if evictedWant := i <= n-limit; evictedWant != (err == io.EOF) {
			t.Fatalf("connection %d (of %d, limit %d): read %v, want evicted %v", i, n, limit, err, evictedWant)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	pc.CloseIdleConnections()
	var after int
	testenv.Eventually(t, 20*time.Second, func() bool {
		after, err = e.goroutines()
		return err == nil && after <= base+20
	}, "goroutines back to %d + 20", base)
	if got, err := e.metric("ipng_proxy_connections_idle_closed_total"); err != nil || got != 0 {
		t.Errorf("ipng_proxy_connections_idle_closed_total = %d (%v), want 0 (nothing waited for read_header)", got, err)
	}
	t.Logf("goroutines: %d before, %d with %d idle connections (limit %d), %d after", base, during, n, limit, after)
	e.waitCounts(map[string]uint64{"tag2-v6 " + e.topo.VIP6.String() + " 2xx": 1})
}
