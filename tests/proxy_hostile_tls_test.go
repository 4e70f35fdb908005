package tests

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
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

// TestProxyHostileRequestsTLS is TestProxyHostileRequests on a TLS
// listener. After the handshake: the same hostileRequests get the same
// answers (400, 414, 431, 408), each counted under the client's tag (4xx).
// Before it: a client that never sends a ClientHello (closed without an
// answer), one that stalls in the middle of it, and one that does not
// speak TLS are closed (at read_header for the first two) and counted in
// ipng_proxy_connections_idle_closed_total (they sent no request). During
// and after each, a request over TLS from another interface is served and
// counted.
func TestProxyHostileRequestsTLS(t *testing.T) {
	e := newProxyEnv(t, proxyTLSYAML(t, "1s", ""))
	h := newHostileClient(e, proxyClientTLS)
	h.requests(t, hostileRequests)
	h.unanswered(t, []unansweredConn{
		sendsNothing, // no ClientHello
		// The record header announces 512 bytes, 10 follow.
		{"stalled ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 1, 2, 3, 4}, false},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
	})
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
	h := newHostileClient(e, proxyClientTLS)
	e.idleFlood(t, n, func(i int, ctx context.Context, c net.Conn) (net.Conn, error) {
		if i == n/2 {
			if err := h.get(); err != nil {
				return c, fmt.Errorf("the proxy does not serve over TLS during the flood: %w", err)
			}
		}
		if i%2 == 0 {
			return c, nil
		}
		tc := tls.Client(c, proxyClientTLS)
		return tc, tc.HandshakeContext(ctx)
	})
	if err := h.get(); err != nil {
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
