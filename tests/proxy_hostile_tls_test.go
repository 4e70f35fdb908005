package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// proxyTLSYAML is a TLS listener (certificate one.example) with timeouts a
// test can wait out; extra is appended to the proxy section.
func proxyTLSYAML(t *testing.T, readHeader, extra string) string {
	cert, key := proxyCert(t, t.TempDir(), "one.example")
	return fmt.Sprintf(`
proxy:
  listeners:
    - address: ":%%PORT%%"
      upstream: web
      tls:
        - {cert: %s, key: %s}
  upstreams:
    - name: web
      servers: ["%%BACKEND%%"]
  timeouts:
    read_header: %s
    request: 2s
  max_header_bytes: 4096
%s`, cert, key, readHeader, extra)
}

var proxyClientTLS = &tls.Config{InsecureSkipVerify: true, ServerName: "one.example", NextProtos: []string{"http/1.1"}} //nolint:gosec // self-signed test certificate

// tlsDial connects to the proxy's VIP4 port from ns and completes a TLS
// handshake (HTTP/1.1).
func (e *proxyEnv) tlsDial(ns *topo.NS) *tls.Conn {
	e.t.Helper()
	c := tls.Client(e.rawDial(ns), proxyClientTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		e.t.Fatalf("TLS handshake: %v", err)
	}
	return c
}

// httpsOK makes a request over TLS from c2 (IPv6): the proxy keeps serving.
func (e *proxyEnv) httpsOK() error {
	tr := &http.Transport{DialContext: e.topo.C2.Dial, TLSClientConfig: proxyClientTLS, DisableKeepAlives: true}
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	return getStatus(c, "https://"+netip.AddrPortFrom(e.topo.VIP6, uint16(e.port)).String()+"/status/200", 200)
}

// closedWithin reads c until the proxy closes it (at most 30 s) and
// returns the first line it answered and how long the close took.
func closedWithin(c net.Conn) (string, time.Duration, error) {
	b, d, err := testenv.ClosedWithin(c, 30*time.Second)
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line, d, err
}

// TestProxyHostileRequestsTLS is TestProxyHostileRequests on a TLS
// listener. After the handshake: a malformed request gets 400, oversized
// headers 431, slowloris headers and body 408, each counted under the
// client's tag (4xx). Before it: a client that never sends a ClientHello,
// one that stalls in the middle of it, and one that does not speak TLS
// are closed (at read_header for the first two) and counted in
// ipng_proxy_connections_idle_closed_total (they sent no request). After
// each, a request over TLS from another interface is served and counted.
func TestProxyHostileRequestsTLS(t *testing.T) {
	e := newProxyEnv(t, proxyTLSYAML(t, "1s", ""))
	key := "tag1 " + e.topo.VIP4.String() + " 4xx"
	ok := "tag2-v6 " + e.topo.VIP6.String() + " 2xx"
	want := map[string]uint64{}
	// counted checks the counts (bounded) and goes on from what it found,
	// so that one run reports every step that differs.
	counted := func(step string) {
		t.Helper()
		var got map[string]uint64
		deadline := time.Now().Add(10 * time.Second)
		for {
			got = e.counts()
			if maps.Equal(got, want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !maps.Equal(got, want) {
			t.Errorf("after %s: counts\n got  %v\n want %v", step, got, want)
			want = got
		}
	}
	served := func(step string) {
		t.Helper()
		if err := e.httpsOK(); err != nil {
			t.Fatalf("after %s: the proxy does not serve over TLS: %v", step, err)
		}
		want[ok]++
		counted(step)
	}
	for _, tc := range []struct {
		name string
		req  string
		slow string // then sent every 100 ms until the answer
		want []string
	}{
		{"malformed request line", "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", "", []string{"HTTP/1.1 400 Bad Request"}},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "", []string{"HTTP/1.1 431 Request Header Fields Too Large"}},
		{"slowloris headers", "GET / HTTP/1.1\r\n", "X-A: b\r\n", []string{"HTTP/1.1 408 Request Timeout"}},
		{"slowloris body", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "a", []string{"HTTP/1.1 408 Request Timeout"}},
	} {
		c := e.tlsDial(e.topo.C1)
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
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
		// Served during the attack, from another interface.
		if err := e.httpsOK(); err != nil {
			t.Fatalf("%s: the proxy does not serve over TLS during it: %v", tc.name, err)
		}
		want[ok]++
		start := time.Now()
		got, err := testenv.StatusLine(c, "")
		d := time.Since(start)
		close(stop)
		wg.Wait()
		c.Close()
		if !slices.Contains(tc.want, got) {
			t.Errorf("%s: got %q (%v) after %v, want one of %q", tc.name, got, err, d.Round(time.Millisecond), tc.want)
		}
		if d > 10*time.Second {
			t.Errorf("%s: answered after %v (read_header 1s, request 2s)", tc.name, d)
		}
		want[key]++
		served(tc.name)
	}
	idleClosed := func(n int, step string) {
		t.Helper()
		var got int
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err = e.metric("ipng_proxy_connections_idle_closed_total")
			if err == nil && got == n || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got != n {
			t.Errorf("after %s: ipng_proxy_connections_idle_closed_total = %d (%v), want %d", step, got, err, n)
		}
	}
	idleClosed(0, "requests after the handshake")
	for i, tc := range []struct {
		name string
		send []byte
		max  time.Duration // closed within
	}{
		{"no ClientHello", nil, 15 * time.Second},
		// The record header announces 512 bytes, 10 follow.
		{"stalled ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 1, 2, 3, 4}, 15 * time.Second},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 15 * time.Second},
	} {
		c := e.rawDial(e.topo.C1)
		c.Write(tc.send)
		if err := e.httpsOK(); err != nil {
			t.Fatalf("%s: the proxy does not serve over TLS during it: %v", tc.name, err)
		}
		want[ok]++
		line, d, err := closedWithin(c)
		c.Close()
		if err != nil || d > tc.max {
			t.Errorf("%s: closed after %v (%v), want within %v", tc.name, d, err, tc.max)
		}
		t.Logf("%s: closed after %v, answer %q", tc.name, d.Round(time.Millisecond), line)
		idleClosed(i+1, tc.name)
		served(tc.name)
	}
	if n := strings.Count(e.proc.out.String(), "handshake"); n > 0 {
		t.Errorf("%d log lines about TLS handshakes (a flood of them floods the log)", n)
	}
}

// TestProxyTenThousandIdleConnectionsTLS: 10 000 connections to a TLS
// listener with proxy.max_connections 64 that send no HTTP: every other
// one sends no ClientHello, the others complete their handshake (HTTP/1.1)
// and go silent. The proxy holds at most 64, each one closed to make room
// counted evicted (a completed handshake is no HTTP byte), none
// over_limit, goroutines bounded, and a request over TLS from another
// interface during the flood gets 200.
func TestProxyTenThousandIdleConnectionsTLS(t *testing.T) {
	const n, limit = 10000, 64
	e := newProxyEnv(t, proxyTLSYAML(t, "5m", fmt.Sprintf("  max_connections: %d\n", limit)))
	base, err := e.goroutines()
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	addr := netip.AddrPortFrom(e.topo.VIP4, uint16(e.port)).String()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := e.topo.C1.Dial(ctx, "tcp4", addr)
		if err == nil && i%2 == 1 {
			tc := tls.Client(c, proxyClientTLS)
			err = tc.HandshakeContext(ctx)
			c = tc
		}
		cancel()
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
		if i == n/2 {
			if err := e.httpsOK(); err != nil {
				t.Fatalf("the proxy does not serve over TLS during the flood: %v", err)
			}
		}
	}
	if err := e.httpsOK(); err != nil {
		t.Fatalf("the proxy does not serve over TLS after the flood: %v", err)
	}
	// The two requests' connections made room for themselves and left;
	// the first one's place was taken by the next connection of the flood,
	// the second one's stays free.
	var evicted, over int
	testenv.EventuallyNil(t, 20*time.Second, "connections evicted", func() error {
		evicted, err = e.rejectedConns("evicted")
		over, _ = e.rejectedConns("over_limit")
		open, oerr := e.metric("ipng_proxy_connections_open")
		if err == nil && (evicted != n-limit+1 || open != limit-1) {
			err = fmt.Errorf("evicted %d, over_limit %d, open %d (%v); want %d evicted, %d open", evicted, over, open, oerr, n-limit+1, limit-1)
		}
		return err
	})
	during, _ := e.goroutines()
	if during > base+2*limit+50 {
		t.Errorf("%d goroutines with %d idle connections (limit %d), %d before", during, n, limit, base)
	}
	if over != 0 {
		t.Errorf("over_limit %d, evicted %d: idle connections could always be evicted", over, evicted)
	}
	t.Logf("goroutines: %d before, %d with %d idle connections (limit %d); evicted %d, over_limit %d", base, during, n, limit, evicted, over)
	e.waitCounts(map[string]uint64{"tag2-v6 " + e.topo.VIP6.String() + " 2xx": 2})
}
