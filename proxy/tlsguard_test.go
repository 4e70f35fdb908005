package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestTLSRejectionsCounted: over TLS (HTTP/1.1), the requests the gate
// rejects are answered by the proxy and recorded with the status the
// client got (400, 431, 408), not as a generic 400, and a handshake never
// completed is counted idle-closed.
func TestTLSRejectionsCounted(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	addr := freeAddr(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	cfg := config.ProxyConfig{
		AccessLog:      config.ProxyAccessLogConfig{File: logFile},
		Listeners:      []config.ProxyListener{{Address: addr, Upstream: "web", TLS: []config.ProxyCert{writeCert(t, t.TempDir(), "one.example")}}},
		Upstreams:      []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
		Timeouts:       config.ProxyTimeouts{ReadHeader: time.Second},
		MaxHeaderBytes: 4096,
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	client := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}} //nolint:gosec // self-signed test certificate
	for _, tc := range []struct{ req, want string }{
		{"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8<<10) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
		{"GET / HTTP/1.1\r\nHost: x\r\n", "HTTP/1.1 408 Request Timeout"},
	} {
		c, err := tls.Dial("tcp", addr, client)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, tc.req)
		got, err := testenv.StatusLine(c, "")
		c.Close()
		if got != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.req[:12], got, err, tc.want)
		}
	}
	// A request still works, with Request.TLS set (X-Forwarded-Proto).
	tr := &http.Transport{TLSClientConfig: client}
	defer tr.CloseIdleConnections()
	if _, body := get(t, &http.Client{Transport: tr}, "https://"+addr+"/echo"); !strings.Contains(body, "|https|") {
		t.Errorf("body %q: not seen as https", body)
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 1, "loopback 127.0.0.1 4xx": 3})
	waitLines(t, logFile, 4)
	data, _ := os.ReadFile(logFile)
	for _, code := range []string{"400", "431", "408", "200"} {
		if strings.Count(string(data), `"status":`+code+`,`) != 1 {
			t.Errorf("access log: want one request with status %s:\n%s", code, data)
		}
	}
	if n := p.idleClosed.Load(); n != 0 {
		t.Errorf("idle closed %d after requests, want 0", n)
	}
}

// h2Preface is the HTTP/2 client connection preface followed by an empty
// SETTINGS frame: what a client sends before its first stream.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// TestTLSIdleH2Evicted: at proxy.max_connections, an HTTP/2 connection
// over TLS that has no stream yet is evictable like a quiet HTTP/1.1 one:
// one that sent no preface and one that sent the preface and SETTINGS
// (and read the server's) hold the two places; a new HTTP/2 client is
// served (the preface timeout, 10 s in net/http, is not waited for), and
// so is a second one, which can only get in by evicting the idle one with
// the preface (the first client's connection has had a stream: it stays).
// A third, with both places held by connections that have had a stream,
// is refused (over_limit), not let in by evicting one of them. Before, an HTTP/2 connection counted as busy once negotiated: both
// clients were closed at once (over_limit).
func TestTLSIdleH2Evicted(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	addr := freeAddr(t)
	cfg := config.ProxyConfig{
		Listeners:      []config.ProxyListener{{Address: addr, Upstream: "web", TLS: []config.ProxyCert{writeCert(t, t.TempDir(), "one.example")}}},
		Upstreams:      []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
		Timeouts:       config.ProxyTimeouts{ReadHeader: 10 * time.Minute, Idle: 10 * time.Minute},
		MaxConnections: 2,
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	h2 := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}} //nolint:gosec // self-signed test certificate
	hold := func(preface bool) *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", addr, h2)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("negotiated %q, want h2", p)
		}
		if preface {
			if _, err := io.WriteString(c, h2Preface); err != nil {
				t.Fatal(err)
			}
			// The server's SETTINGS frame: the connection is HTTP/2's.
			var hdr [9]byte
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[3] != 0x4 {
				t.Fatalf("server's first frame: % x %v, want SETTINGS", hdr, err)
			}
			c.SetReadDeadline(time.Time{})
		}
		return c
	}
	noPreface := hold(false)
	idle := hold(true)
	testenv.Eventually(t, 20*time.Second, func() bool { return p.limit.openNow() == 2 }, "two connections held")

	gone := func(c *tls.Conn) error {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := c.Read(make([]byte, 4096)); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					return err
				}
				return nil // closed
			}
		}
	}
	serve := func(name string) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: h2.Clone(), ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://" + addr + "/status/200")
		if err != nil {
			t.Fatalf("%s: %v (evicted %d, over_limit %d)", name, err, p.limit.evicted.Load(), p.limit.overLimit.Load())
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("%s: %s over %s, want 200 over HTTP/2", name, resp.Status, resp.Proto)
		}
	}
	// The first client makes room: the oldest quiet connection (the one
	// without a preface) is evicted, unless net/http's preface timeout
	// closed it first on a very slow machine.
	serve("first HTTP/2 client")
	if err := gone(noPreface); err != nil {
		t.Fatalf("the connection without a preface is still open: %v", err)
	}
	// The second can only get in by evicting the idle one with a preface.
	serve("second HTTP/2 client")
	if err := gone(idle); err != nil {
		t.Fatalf("the idle connection with a preface is still open: %v", err)
	}
	if e, o := p.limit.evicted.Load(), p.limit.overLimit.Load(); e < 1 || e > 2 || o != 0 {
		t.Errorf("evicted %d, over_limit %d; want 1 or 2 (the idle connections) and 0", e, o)
	}
	if n := p.limit.openNow(); n != 2 {
		t.Errorf("%d connections open, want 2 (both clients')", n)
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 2})
	// Both places are now held by connections that served a stream (their
	// clients keep them open): not quiet, so a third client is refused
	// rather than let in by evicting one of them.
	evicted := p.limit.evicted.Load()
	tr := &http.Transport{TLSClientConfig: h2.Clone(), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	if resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get("https://" + addr + "/status/200"); err == nil {
		resp.Body.Close()
		t.Fatalf("a third client was served (%s): a connection that had served a stream was evicted", resp.Status)
	}
	if e, o := p.limit.evicted.Load(), p.limit.overLimit.Load(); e != evicted || o != 1 {
		t.Errorf("third client: evicted %d → %d, over_limit %d; want no eviction and 1 over the limit", evicted, e, o)
	}
}
