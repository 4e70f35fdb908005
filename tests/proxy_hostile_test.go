package tests

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// proxyHostileYAML is the e2e proxy section with header and request
// timeouts a test can wait out.
var proxyHostileYAML = strings.Replace(proxyYAML, "read_header: 500ms", "read_header: 1s\n    request: 2s", 1)

// TestProxyHostileRequests: what a hostile client gets from the proxy's
// listener (hostileRequests), each counted under the client's tag with the
// status it got (the 4xx series), and the proxy serving others during and
// after each; a connection that sends nothing is closed at read_header
// without an answer and counted in
// ipng_proxy_connections_idle_closed_total, in no per-tag series.
func TestProxyHostileRequests(t *testing.T) {
	h := newHostileClient(newProxyEnv(t, proxyHostileYAML), nil)
	h.requests(t, hostileRequests)
	h.unanswered(t, []unansweredConn{sendsNothing})
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
	conns := e.idleFlood(t, n, nil)
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
