package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// backend answers /status/N with N, /slow after a second, /echo with the
// X-Forwarded-* headers it got and /ws as a line echo after a 101.
func newBackend(t testing.TB, name string) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscan(r.PathValue("code"), &code)
		w.Header().Set("X-Backend", name)
		w.WriteHeader(code)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s|%s|%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-Host"), r.Host)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(line)
			brw.Flush()
		}
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func hostOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func get(t testing.TB, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestOutcomes(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	good, down := freeAddr(t), freeAddr(t)
	cfg := config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: good, Upstream: "web"}, {Address: down, Upstream: "down"}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}, {Name: "down", Servers: []string{freeAddr(t)}}},
		Timeouts:  config.ProxyTimeouts{Upstream: 200 * time.Millisecond},
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	c := &http.Client{}
	tests := []struct {
		url  string
		want int
	}{
		{"http://" + good + "/status/200", 200}, {"http://" + good + "/status/201", 201},
		{"http://" + good + "/status/404", 404}, {"http://" + good + "/status/500", 500},
		{"http://" + good + "/slow", 504}, {"http://" + down + "/", 502},
	}
	for _, tc := range tests {
		if resp, _ := get(t, c, tc.url); resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.url, resp.StatusCode, tc.want)
		}
	}
	_, body := get(t, c, "http://"+good+"/echo")
	if want := "127.0.0.1|http|" + good + "|" + good; body != want {
		t.Errorf("echo %q, want %q", body, want)
	}
	// An inbound X-Forwarded-For is appended to on the fast path (a plain
	// GET) and on the ReverseProxy path (a chunked request body) alike.
	for _, chunked := range []bool{false, true} {
		var body io.Reader
		if chunked {
			body = io.MultiReader(strings.NewReader("x")) // unknown length: chunked
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+good+"/echo", body)
		req.Header.Set("X-Forwarded-For", "203.0.113.1")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "203.0.113.1, 127.0.0.1|http|" + good + "|" + good; string(got) != want {
			t.Errorf("chunked=%v: echo %q, want %q", chunked, got, want)
		}
	}
	c.CloseIdleConnections()
	waitCodes(t, deps.Collector, map[string]uint64{
		"loopback 127.0.0.1 2xx": 5, "loopback 127.0.0.1 4xx": 1, "loopback 127.0.0.1 5xx": 3,
	})
}

func TestBalancing(t *testing.T) {
	for _, balance := range []string{"round_robin", "least_conn"} {
		t.Run(balance, func(t *testing.T) {
			deps := newDeps(t)
			var servers []string
			for i := range 3 {
				servers = append(servers, hostOf(newBackend(t, fmt.Sprint(i))))
			}
			servers = append(servers, freeAddr(t)) // dead: retried, then taken out
			addr := freeAddr(t)
			p, err := New(config.ProxyConfig{Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
				Upstreams: []config.ProxyUpstream{{Name: "web", Balance: balance, Servers: servers}}}, deps)
			if err != nil {
				t.Fatal(err)
			}
			running(t, p)
			seen := map[string]int{}
			for range 30 {
				resp, _ := get(t, http.DefaultClient, "http://"+addr+"/status/200")
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				seen[resp.Header.Get("X-Backend")]++
			}
			if len(seen) != 3 || seen["0"] < 5 || seen["1"] < 5 || seen["2"] < 5 {
				t.Errorf("distribution %v", seen)
			}
			if dead := p.pools["web"].backends[3]; dead.alive(time.Now().UnixNano()) {
				t.Error("dead backend still in service")
			}
		})
	}
}

// TestReload: a kept listener keeps its socket and open connections across
// reloads that change its upstream and its timeouts; a removed one closes.
func TestReload(t *testing.T) {
	deps := newDeps(t)
	a, b := newBackend(t, "a"), newBackend(t, "b")
	addr, extra := freeAddr(t), freeAddr(t)
	cfg := config.ProxyConfig{Listeners: []config.ProxyListener{{Address: addr, Upstream: "a"}},
		Upstreams: []config.ProxyUpstream{{Name: "a", Servers: []string{hostOf(a)}}, {Name: "b", Servers: []string{hostOf(b)}}}}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func() string {
		t.Helper()
		io.WriteString(conn, "GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	if got := ask(); got != "a" {
		t.Fatalf("backend %q", got)
	}
	cfg.Listeners = []config.ProxyListener{{Address: addr, Upstream: "b"}, {Address: extra, Upstream: "a"}}
	cfg.Timeouts.Idle = 30 * time.Second // new server on the same socket
	if err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := ask(); got != "b" {
		t.Errorf("after reload: backend %q, want b", got)
	}
	if resp, _ := get(t, http.DefaultClient, "http://"+extra+"/status/200"); resp.Header.Get("X-Backend") != "a" {
		t.Error("new listener not serving")
	}
	bad := cfg
	bad.Listeners = append(bad.Listeners, config.ProxyListener{Address: "192.0.2.1:1", Upstream: "a"})
	if err := p.Reload(bad); err == nil {
		t.Error("reload with an unbindable address succeeded")
	}
	cfg.Listeners = cfg.Listeners[:1]
	if err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", extra, time.Second); err == nil {
		c.Close()
		t.Error("removed listener still accepts")
	}
	if got := ask(); got != "b" {
		t.Errorf("after second reload: backend %q", got)
	}
	http.DefaultClient.CloseIdleConnections()
	conn.Close()
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 4})
}

func TestTLSWebSocketAccessLog(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	dir := t.TempDir()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	addr := freeAddr(t)
	logFile := filepath.Join(dir, "access.log")
	cfg := config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: addr, Upstream: "web",
			TLS: []config.ProxyCert{writeCert(t, dir, "one.example"), writeCert(t, dir, "two.example")}}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
		AccessLog: config.ProxyAccessLogConfig{File: logFile,
			Logtail: config.ProxyLogtailConfig{Target: udp.LocalAddr().String(), FlushInterval: 50 * time.Millisecond}},
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	for _, tc := range []struct {
		sni string
		h2  bool
	}{{"one.example", false}, {"two.example", true}} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: tc.sni}, ForceAttemptHTTP2: tc.h2}
		resp, body := get(t, &http.Client{Transport: tr}, "https://"+addr+"/echo")
		if got := resp.TLS.PeerCertificates[0].Subject.CommonName; got != tc.sni {
			t.Errorf("SNI %s: certificate %s", tc.sni, got)
		}
		if resp.ProtoMajor != map[bool]int{false: 1, true: 2}[tc.h2] || !strings.Contains(body, "|https|") {
			t.Errorf("SNI %s: proto %s body %q", tc.sni, resp.Proto, body)
		}
		tr.CloseIdleConnections()
	}
	// WebSocket-style upgrade through TLS (HTTP/1.1).
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "ping\n")
	if line, _ := br.ReadString('\n'); line != "ping\n" {
		t.Errorf("echo %q", line)
	}
	c.Close()
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 1xx": 1, "loopback 127.0.0.1 2xx": 2})

	udp.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64<<10)
	n, _, err := udp.ReadFrom(buf)
	if err != nil {
		t.Fatalf("logtail: %v", err)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(string(buf[:n]), "\n", 2)[0]), &e); err != nil {
		t.Fatalf("logtail line %q: %v", buf[:n], err)
	}
	if e["source_tag"] != "loopback" || e["device"] != "lo" || e["vip"] != "127.0.0.1" || e["upstream"] != hostOf(be) {
		t.Errorf("logtail entry %v", e)
	}
	if err := p.Reload(config.ProxyConfig{Listeners: cfg.Listeners, Upstreams: cfg.Upstreams}); err != nil {
		t.Fatal(err) // closes (flushes) the access log
	}
	data, _ := os.ReadFile(logFile)
	if lines := strings.Count(string(data), "\n"); lines != 3 {
		t.Errorf("access log has %d lines, want 3:\n%s", lines, data)
	}
}

// TestClientGone: a client that gives up while the upstream is still
// working is recorded as 499 (nginx's "client closed request"), on the fast
// path, and the handler does not wait for the upstream.
func TestClientGone(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	addr := freeAddr(t)
	p, err := New(config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
		Timeouts:  config.ProxyTimeouts{Upstream: 10 * time.Second},
	}, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	c := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := c.Get("http://" + addr + "/slow"); err == nil {
		t.Fatal("the slow request did not time out on the client")
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 4xx": 1})
}

// TestAccessLogReopen: after logrotate moves the access log away, a reload
// with an unchanged configuration writes to a new file at the configured
// path (`create` + `postrotate kill -HUP`).
func TestAccessLogReopen(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	addr := freeAddr(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	cfg := config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
		AccessLog: config.ProxyAccessLogConfig{File: logFile},
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	get(t, &http.Client{}, "http://"+addr+"/status/200")
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 1})
	waitLines(t, logFile, 1) // logged after it is counted
	if err := os.Rename(logFile, logFile+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(cfg); err != nil { // flushes the old file, opens the new one
		t.Fatal(err)
	}
	get(t, &http.Client{}, "http://"+addr+"/status/200")
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 2})
	waitLines(t, logFile, 1)
	if err := p.Reload(config.ProxyConfig{Listeners: cfg.Listeners, Upstreams: cfg.Upstreams}); err != nil {
		t.Fatal(err) // closes (flushes) the access log
	}
	for _, f := range []string{logFile + ".1", logFile} {
		data, err := os.ReadFile(f)
		if lines := strings.Count(string(data), "\n"); err != nil || lines != 1 {
			t.Errorf("%s: %d lines (%v), want 1", f, lines, err)
		}
	}
}
