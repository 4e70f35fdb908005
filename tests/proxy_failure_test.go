package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// twoServerYAML is an upstream of two servers with the default max_fails
// (1): one failure charged to a server takes it out.
const twoServerYAML = `
proxy:
  listeners:
    - address: ":%PORT%"
      upstream: web
  upstreams:
    - name: web
      servers: ["%BACKEND%", "%SECOND%"]
%UPSTREAM%
  timeouts:
    read_header: 1s
    request: 2s
`

// newTwoServerProxy starts the proxy in front of two plain backends, a and
// b; upstream is extra YAML for the upstream entry.
func newTwoServerProxy(t *testing.T, upstream string) *proxyEnv {
	return newTwoServerProxyWith(t, upstream, nil, nil)
}

// newTwoServerProxyWith is newTwoServerProxy with the backends made by
// first and second (nil: a plain proxyBackend).
func newTwoServerProxyWith(t *testing.T, upstream string, first, second func(*topo.Topo) string) *proxyEnv {
	var secondAddr string
	e := newProxyEnvWith(t, "fallback", first, func(tp *topo.Topo) string {
		if second == nil {
			secondAddr = proxyBackend(t, tp, "b")
		} else {
			secondAddr = second(tp)
		}
		return strings.NewReplacer("%SECOND%", secondAddr, "%UPSTREAM%", upstream).Replace(twoServerYAML)
	})
	testenv.Eventually(t, 5*time.Second, func() bool {
		up := e.upstreamUp()
		return len(up) == 2 && up[e.backend] == 1 && up[secondAddr] == 1
	}, "both upstream servers up")
	return e
}

// upstreamUp returns ipng_proxy_upstream_up by server.
func (e *proxyEnv) upstreamUp() map[string]float64 {
	c := proxyClient(e.topo.Srv)
	defer c.CloseIdleConnections()
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.web))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	return testenv.Samples(string(text), "ipng_proxy_upstream_up", "server")
}

// TestProxyClientErrorsSpareUpstreams: malformed chunked bodies, a client
// too slow to send its body and a client that leaves mid-body get 400,
// 408 and 499 (counted as 4xx), each twice, and never take an upstream
// server out: both stay up and serve the requests that follow.
func TestProxyClientErrorsSpareUpstreams(t *testing.T) {
	e := newTwoServerProxy(t, "")
	const head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name, req, want string
	}{
		{"bad hex", head + "ZZZ\r\nabc\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"size overflow", head + "FFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"size 2^64", head + "10000000000000000\r\nabc\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"negative size", head + "-3\r\nabc\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"bare LF after extension", head + "3;ext=1\nabc\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"slow chunked body", head + "3\r\nabc\r\n", "HTTP/1.1 408 Request Timeout"},
		{"slow body", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", "HTTP/1.1 408 Request Timeout"},
	} {
		for i := range 2 {
			c := e.rawDial(e.topo.C1)
			io.WriteString(c, tc.req)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if got := strings.TrimSpace(line); got != tc.want {
				t.Errorf("%s #%d: got %q (%v), want %q", tc.name, i, got, err, tc.want)
			}
			c.Close()
		}
	}
	// A client that leaves while the proxy sends its body upstream (499).
	for range 2 {
		c := e.rawDial(e.topo.C1)
		io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
		testenv.Eventually(t, 5*time.Second, func() bool { return e.gauge(true) > 0 }, "request in the handler")
		c.Close()
		testenv.Eventually(t, 5*time.Second, func() bool { return e.gauge(true) == 0 }, "request finished")
	}
	if up := e.upstreamUp(); len(up) != 2 || up[e.backend] != 1 {
		t.Errorf("ipng_proxy_upstream_up after client errors: %v, want both 1", up)
	}
	c := proxyClient(e.topo.C1)
	defer c.CloseIdleConnections()
	seen := map[string]bool{}
	for i := range 10 {
		resp, err := c.Post(e.url("ipv4", e.port, "/echo"), "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("request %d after client errors: status %d, want 200", i, resp.StatusCode)
		}
		seen[resp.Header.Get("X-Backend")] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Errorf("backends that served: %v, want a and b", seen)
	}
	e.waitCounts(map[string]uint64{"tag1 192.0.2.10 4xx": 16, "tag1 192.0.2.10 2xx": 10})
}

// TestProxyIdleUpstreamClose: backends that close keep-alive connections
// idle for 1 s, and a proxy that would keep them for a minute, fail no
// request across idle gaps and bursts (GET, POST with a body, chunked
// POST; a chunked POST may get the documented 502 of a body sent on a
// connection closed under it), and no server is taken out. Then a keep-alive timeout shorter
// than the backends' is checked the same way.
func TestProxyIdleUpstreamClose(t *testing.T) {
	var open [2]atomic.Int64
	backend := func(i int, name string) func(*topo.Topo) string {
		return func(tp *topo.Topo) string {
			return startProxyBackend(t, tp, name, func(s *http.Server) {
				// Idle: between requests, and before the first one.
				s.IdleTimeout = time.Second
				s.ReadHeaderTimeout = time.Second
				s.ConnState = func(_ net.Conn, st http.ConnState) {
					switch st {
					case http.StateNew:
						open[i].Add(1)
					case http.StateClosed, http.StateHijacked:
						open[i].Add(-1)
					}
				}
			})
		}
	}
	// 1m: the backends close idle connections first; 300ms: the proxy does.
	for _, keepalive := range []string{"1m", "300ms"} {
		t.Run("keepalive_timeout="+keepalive, func(t *testing.T) {
			e := newTwoServerProxyWith(t, "      keepalive_timeout: "+keepalive, backend(0, "a"), backend(1, "b"))
			c := proxyClient(e.topo.C1)
			defer c.CloseIdleConnections()
			var failed, staleChunked atomic.Int64
			send := func(kind int) {
				var (
					resp *http.Response
					err  error
				)
				switch kind {
				case 0:
					resp, err = c.Get(e.url("ipv4", e.port, "/status/200"))
				case 1:
					resp, err = c.Post(e.url("ipv4", e.port, "/echo"), "text/plain", strings.NewReader("hello"))
				default: // chunked: the ReverseProxy path
					resp, err = c.Post(e.url("ipv4", e.port, "/echo"), "text/plain", io.MultiReader(strings.NewReader("hel"), strings.NewReader("lo")))
				}
				if err != nil {
					failed.Add(1)
					t.Errorf("request: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if kind == 2 && resp.StatusCode == http.StatusBadGateway {
					// The documented exception (user guide, "Idle
					// upstream connections"): a POST whose body was
					// sent on a reused connection the server had just
					// closed cannot be replayed. The chunked one goes
					// through Go's http.Transport, which learns of the
					// close from its background reader, not a peek:
					// on a loaded machine it can still pick the
					// connection right after the gap.
					staleChunked.Add(1)
					return
				}
				if resp.StatusCode != 200 {
					failed.Add(1)
					t.Errorf("request kind %d: status %d", kind, resp.StatusCode)
				}
			}
			total := 0
			for round := range 4 {
				var wg sync.WaitGroup
				for i := range 24 {
					wg.Add(1)
					go func() { defer wg.Done(); send(i % 3) }()
				}
				wg.Wait()
				total += 24
				// Idle gap: wait until the backends (or the proxy) have
				// closed every idle upstream connection.
				testenv.Eventually(t, 10*time.Second, func() bool {
					return open[0].Load() == 0 && open[1].Load() == 0
				}, "round %d: idle upstream connections closed", round)
				for range 6 { // a few sequential requests after the gap
					send(round % 3)
					total++
				}
			}
			if failed.Load() != 0 {
				t.Fatalf("%d of %d requests failed", failed.Load(), total)
			}
			// At most the chunked requests of the first burst after each
			// of the three gaps that follow one (8 each) and of the
			// sequential ones after the gap of round 2 (6).
			if n := staleChunked.Load(); n > 3*8+6 {
				t.Errorf("%d chunked requests got 502: more than the connections idle across the gaps", n)
			}
			// Never charged to the server: it only closed idle
			// connections.
			if up := e.upstreamUp(); len(up) != 2 || up[e.backend] != 1 {
				t.Errorf("ipng_proxy_upstream_up: %v, want both 1", up)
			}
			t.Logf("%d requests across idle gaps, none failed; %d chunked POSTs got 502 on a connection closed under them", total, staleChunked.Load())
		})
	}
}

// TestProxyConnectionNamedHeaders: headers the client names in Connection
// are hop-by-hop and dropped, X-Forwarded-For included: the upstream sees
// only the proxy's X-Forwarded-For (the client's address), on the fast
// path and on the ReverseProxy path (a chunked body).
func TestProxyConnectionNamedHeaders(t *testing.T) {
	e := newProxyEnv(t, proxyYAML)
	for _, chunked := range []bool{false, true} {
		c := e.rawDial(e.topo.C1)
		req := "GET /headers HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Forwarded-For, X-Secret\r\n" +
			"X-Forwarded-For: 198.51.100.66\r\nX-Secret: s3cr3t\r\nX-Kept: yes\r\n"
		if chunked {
			req += "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
		} else {
			req += "\r\n"
		}
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("chunked %v: %v", chunked, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		var h http.Header
		if err := json.Unmarshal(body, &h); err != nil {
			t.Fatalf("chunked %v: %v: %s", chunked, err, body)
		}
		client, _, _ := net.SplitHostPort(c.LocalAddr().String())
		if got, want := h.Values("X-Forwarded-For"), []string{client}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("chunked %v: X-Forwarded-For %q, want %q", chunked, got, want)
		}
		if h.Get("X-Secret") != "" || h.Get("X-Kept") != "yes" {
			t.Errorf("chunked %v: X-Secret %q (want none), X-Kept %q (want yes)", chunked, h.Get("X-Secret"), h.Get("X-Kept"))
		}
	}
}
