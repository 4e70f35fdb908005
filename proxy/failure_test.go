package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// onceBackend answers the first request of each connection and closes the
// connection when the second one arrives, without a byte of response: a
// backend that closed a kept-alive connection just as the proxy reused it.
func onceBackend(t *testing.T) string {
	return rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		http.ReadRequest(br) // the second request: closed unanswered
	})
}

// TestStaleReusedConnection: requests that fail on a reused upstream
// connection before any response byte are sent again on a new connection
// when they can be (a GET), and otherwise (a POST whose body was sent) get
// 502; neither takes a server out, though max_fails is 1.
func TestStaleReusedConnection(t *testing.T) {
	deps := newDeps(t)
	addr := freeAddr(t)
	p, err := New(config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{onceBackend(t), onceBackend(t)}, MaxFails: 1, FailTimeout: time.Minute}},
	}, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	c := &http.Client{Timeout: 5 * time.Second}
	do := func(method string) int {
		t.Helper()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("payload")
		}
		req, _ := http.NewRequest(method, "http://"+addr+"/", body)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Round robin: one new connection per server, then each is reused.
	for i, tc := range []struct {
		method string
		want   int
	}{{"GET", 200}, {"GET", 200}, {"GET", 200}, {"POST", 502}} {
		if got := do(tc.method); got != tc.want {
			t.Errorf("request %d (%s): status %d, want %d", i, tc.method, got, tc.want)
		}
	}
	now := time.Now().UnixNano()
	p.mu.Lock()
	backends := p.pools["web"].backends
	p.mu.Unlock()
	for _, b := range backends {
		if !b.alive(now) || b.fails.Load() != 0 {
			t.Errorf("server %s: alive %v, fails %d; want in service, no failure", b.addr, b.alive(now), b.fails.Load())
		}
	}
}
