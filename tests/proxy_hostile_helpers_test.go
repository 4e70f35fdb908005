package tests

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// The hostile-client attacks, written once for the plain and the TLS tests
// (TestProxyHostileRequests, TestProxyTenThousandIdleConnections, …TLS).

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

// hostileRequest is a request a hostile client sends once connected (after
// the TLS handshake on a TLS listener), and the status line it must get.
type hostileRequest struct {
	name string
	req  string
	slow string // then sent every 100 ms until the answer
	want string
}

// hostileRequests is what a client may send after it connected: each is
// answered with a 4xx within read_header (1 s) or request (2 s).
var hostileRequests = []hostileRequest{
	{"malformed request line", "GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", "", "HTTP/1.1 400 Bad Request"},
	{"binary garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "", "HTTP/1.1 400 Bad Request"},
	{"oversized request line", "GET /" + strings.Repeat("a", 64<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", "", "HTTP/1.1 414 Request URI Too Long"},
	{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "", "HTTP/1.1 431 Request Header Fields Too Large"},
	{"slowloris headers", "GET / HTTP/1.1\r\n", "X-A: b\r\n", "HTTP/1.1 408 Request Timeout"},
	{"slowloris body", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", "a", "HTTP/1.1 408 Request Timeout"},
}

// unansweredConn is a connection that sends no request: nothing, or bytes
// that never become one. The proxy must close it within 15 s.
type unansweredConn struct {
	name   string
	send   []byte
	silent bool // closed with a clean EOF and not a byte answered
}

// sendsNothing is a connection that sends nothing at all: closed at
// read_header without an answer (as nginx does).
var sendsNothing = unansweredConn{"sends nothing", nil, true}

// hostileClient runs the attacks against one listener of e, plain or TLS,
// from c1 (tag1, IPv4), and checks after each that a well-behaved client
// on c2 (tag2-v6) is served and that the counts are exactly want.
type hostileClient struct {
	e       *proxyEnv
	tls     *tls.Config // nil: a plain listener
	bad, ok string      // the series of the attacks' 4xx and of the well-behaved client's 200s
	want    map[string]uint64
}

func newHostileClient(e *proxyEnv, tlsConf *tls.Config) *hostileClient {
	return &hostileClient{e: e, tls: tlsConf, want: map[string]uint64{},
		bad: "tag1 " + e.topo.VIP4.String() + " 4xx", ok: "tag2-v6 " + e.topo.VIP6.String() + " 2xx"}
}

// dial connects from c1, ready for HTTP: over TLS, the handshake is done.
func (h *hostileClient) dial() net.Conn {
	if h.tls != nil {
		return h.e.tlsDial(h.e.topo.C1)
	}
	return h.e.rawDial(h.e.topo.C1)
}

// get makes a request from c2 (IPv6) on a connection of its own, over TLS
// on a TLS listener: nil when it got 200.
func (h *hostileClient) get() error {
	scheme, tr := "http://", &http.Transport{DialContext: h.e.topo.C2.Dial, DisableKeepAlives: true}
	if h.tls != nil {
		scheme, tr.TLSClientConfig = "https://", h.tls
	}
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	return getStatus(c, scheme+netip.AddrPortFrom(h.e.topo.VIP6, uint16(h.e.port)).String()+"/status/200", 200)
}

// served is get, during or after step.
func (h *hostileClient) served(t *testing.T, step string) {
	t.Helper()
	if err := h.get(); err != nil {
		t.Fatalf("%s: the proxy does not serve: %v", step, err)
	}
	h.want[h.ok]++
}

// counted checks that the counts are exactly want (bounded wait) and goes
// on from what it found, so that one run reports every step that differs.
func (h *hostileClient) counted(t *testing.T, step string) {
	t.Helper()
	var got map[string]uint64
	if !settles(func() bool { got = h.e.counts(); return maps.Equal(got, h.want) }) {
		t.Errorf("after %s: counts\n got  %v\n want %v", step, got, h.want)
		h.want = got
	}
}

// idleClosed checks (bounded wait) that
// ipng_proxy_connections_idle_closed_total is n.
func (h *hostileClient) idleClosed(t *testing.T, n int, step string) {
	t.Helper()
	var got int
	var err error
	if !settles(func() bool {
		got, err = h.e.metric("ipng_proxy_connections_idle_closed_total")
		return err == nil && got == n
	}) {
		t.Errorf("after %s: ipng_proxy_connections_idle_closed_total = %d (%v), want %d", step, got, err, n)
	}
}

// settles polls cond for at most 10 s and reports whether it came to hold.
func settles(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// requests sends each hostile request on a connection of its own: it gets
// its status line within 10 s and counts under tag1 (4xx), a well-behaved
// client is served during and after it, and none of them counts as an
// idle connection (each sent bytes).
func (h *hostileClient) requests(t *testing.T, reqs []hostileRequest) {
	for _, tc := range reqs {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			c := h.dial()
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			stop := trickle(c, tc.slow, 100*time.Millisecond)
			h.served(t, "during "+tc.name)
			start := time.Now()
			got, err := testenv.StatusLine(c, "")
			d := time.Since(start)
			stop()
			c.Close()
			if got != tc.want || d > 10*time.Second {
				t.Errorf("got %q (%v) after %v, want %q within 10s (read_header 1s, request 2s)", got, err, d.Round(time.Millisecond), tc.want)
			}
			h.want[h.bad]++
			h.served(t, "after "+tc.name)
			h.counted(t, tc.name)
		})
	}
	h.idleClosed(t, 0, "requests")
}

// unanswered opens each connection from c1 without TLS and sends what it
// sends: the proxy closes it within 15 s (without an answer where it
// is silent) and counts it in ipng_proxy_connections_idle_closed_total, in
// no per-tag series; a well-behaved client is served during and after it.
func (h *hostileClient) unanswered(t *testing.T, conns []unansweredConn) {
	for i, tc := range conns {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			c := h.e.rawDial(h.e.topo.C1)
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			h.served(t, "during "+tc.name)
			start := time.Now()
			c.SetReadDeadline(start.Add(30 * time.Second))
			b, err := io.ReadAll(c) // a reset (unread bytes) is a close too
			d := time.Since(start)
			c.Close()
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || d > 15*time.Second {
				t.Errorf("closed after %v (%v), want within 15s", d, err)
			}
			if tc.silent && (err != nil || len(b) != 0) {
				t.Errorf("read %q, %v; want EOF and no answer", b, err)
			}
			line, _, _ := strings.Cut(string(b), "\r\n")
			t.Logf("closed after %v, answer %q", d.Round(time.Millisecond), line)
			h.idleClosed(t, i+1, tc.name)
			h.served(t, "after "+tc.name)
			h.counted(t, tc.name)
		})
	}
}

// trickle writes s on c every period until stop is called (nothing when s
// is empty): a client that keeps sending, too slowly to finish.
func trickle(c net.Conn, s string, period time.Duration) (stop func()) {
	if s == "" {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				if _, err := io.WriteString(c, s); err != nil {
					return
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

// idleFlood opens n connections from c1 to the proxy's VIP4 port that send
// no HTTP, each passed to then (nil: none) with its index before it is
// kept; all are closed when the test ends.
func (e *proxyEnv) idleFlood(t *testing.T, n int, then func(i int, ctx context.Context, c net.Conn) (net.Conn, error)) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	addr := netip.AddrPortFrom(e.topo.VIP4, uint16(e.port)).String()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := e.topo.C1.Dial(ctx, "tcp4", addr)
		if err == nil && then != nil {
			c, err = then(i, ctx, c)
		}
		cancel()
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	return conns
}
