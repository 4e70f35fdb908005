package proxy

import (
	"crypto/tls"
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
