package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// ownProxy runs a proxy with http1_loop own in front of upstream and
// returns its address.
func ownProxy(t *testing.T, deps Deps, upstream string, mod func(*config.ProxyConfig)) (string, *Proxy) {
	t.Helper()
	addr := freeAddr(t)
	cfg := config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{upstream}}},
		HTTP1Loop: "own",
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	return addr, p
}

// echoBackend answers every request with "METHOD PATH BODY|XFF|PROTO" and
// counts the connections it accepted.
func echoBackend(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s|%s|%s|%s", r.Method, r.URL.RequestURI(), b, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Hop"), r.Proto)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// readBody reads one response from br and returns its status and body.
func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return resp, string(b)
}

// TestOwnLoopPipelining: three requests in one write, a body among them
// and a hop-by-hop field the client named, are answered in order on one
// connection, each counted once and logged with its method and target.
func TestOwnLoopPipelining(t *testing.T) {
	deps := newDeps(t)
	be, conns := echoBackend(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	addr, _ := ownProxy(t, deps, hostOf(be), func(c *config.ProxyConfig) { c.AccessLog.File = logFile })
	c, br := dialRaw(t, addr)
	reqs := []string{"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: ua1\r\n\r\n",
		"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Hop: 1\r\nConnection: X-Hop\r\n\r\nhello",
		"GET /c HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n"}
	io.WriteString(c, strings.Join(reqs, ""))
	for _, want := range []string{"GET /a?x=1 |127.0.0.1||HTTP/1.1", "POST /b hello|127.0.0.1||HTTP/1.1", "GET /c |192.0.2.1, 127.0.0.1||HTTP/1.1"} {
		resp, body := readResp(t, br, "GET")
		if resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the backend saw %d connections, want 1 (reused)", n)
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 3})
	waitLines(t, logFile, 3)
	data, _ := os.ReadFile(logFile)
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m struct {
			Method, URI, Proto, Host string
			UA                       string `json:"user_agent"`
			Status                   int
			RB                       int `json:"request_bytes"`
		}
		json.Unmarshal([]byte(line), &m)
		got = append(got, fmt.Sprintf("%s %s %s %s %s %d %d", m.Method, m.URI, m.Proto, m.Host, m.UA, m.Status, m.RB))
	}
	want := []string{fmt.Sprintf("GET /a?x=1 HTTP/1.1 h ua1 200 %d", len(reqs[0])),
		fmt.Sprintf("POST /b HTTP/1.1 h  200 %d", len(reqs[1])), fmt.Sprintf("GET /c HTTP/1.1 h  200 %d", len(reqs[2]))}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("access log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestOwnLoopPartialReads: a head and a body arriving in pieces, and a
// body larger than the connection's buffer, are forwarded whole.
func TestOwnLoopPartialReads(t *testing.T) {
	deps := newDeps(t)
	be, _ := echoBackend(t)
	addr, _ := ownProxy(t, deps, hostOf(be), nil)
	c, br := dialRaw(t, addr)
	req := "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabcdef"
	for i := 0; i < len(req); i += 7 {
		if _, err := io.WriteString(c, req[i:min(i+7, len(req))]); err != nil {
			t.Fatal(err)
		}
	}
	if resp, body := readResp(t, br, "POST"); resp.StatusCode != 200 || body != "POST /p abcdef|127.0.0.1||HTTP/1.1" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	big := strings.Repeat("x", 100<<10)
	go io.WriteString(c, fmt.Sprintf("PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", len(big), big))
	if resp, body := readResp(t, br, "PUT"); resp.StatusCode != 200 || body != "PUT /big "+big+"|127.0.0.1||HTTP/1.1" {
		t.Errorf("got %d, body of %d bytes", resp.StatusCode, len(body))
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 2})
}

// TestOwnLoopResponseFramings: responses framed by Content-Length, by
// chunks (with a trailer) and by the upstream closing reach the client
// whole, on one client connection; the upstream connection is reused
// after the first two and not after the third.
func TestOwnLoopResponseFramings(t *testing.T) {
	deps := newDeps(t)
	var accepted atomic.Int64
	be := rawBackend(t, func(c net.Conn) {
		accepted.Add(1)
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch r.URL.Path {
			case "/length":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nKeep-Alive: timeout=5\r\n\r\nlength")
			case "/chunked":
				io.WriteString(c, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nchu\r\n4;ext=1\r\nnked\r\n0\r\nX-Trailer: t\r\n\r\n")
			case "/eof":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Mode: eof\r\n\r\nuntil")
				io.WriteString(c, " the end")
				return
			case "/head":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
			case "/nocontent":
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			}
		}
	})
	addr, _ := ownProxy(t, deps, be, nil)
	c, br := dialRaw(t, addr)
	for _, tc := range []struct{ method, path, body, te string }{
		{"GET", "/length", "length", ""},
		{"GET", "/chunked", "chunked", "chunked"},
		{"HEAD", "/head", "", ""},
		{"GET", "/nocontent", "", ""},
		{"GET", "/eof", "until the end", "chunked"},
		{"GET", "/length", "length", ""},
	} {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: h\r\n\r\n", tc.method, tc.path)
		resp, body := readResp(t, br, tc.method)
		te := strings.Join(resp.TransferEncoding, ",")
		if body != tc.body || te != tc.te || resp.Header.Get("Keep-Alive") != "" || resp.Close {
			t.Errorf("%s %s: got %d %q (transfer-encoding %q, keep-alive %q, close %v), want %q", tc.method, tc.path,
				resp.StatusCode, body, te, resp.Header.Get("Keep-Alive"), resp.Close, tc.body)
		}
		if tc.path == "/chunked" && resp.Trailer.Get("X-Trailer") != "t" {
			t.Errorf("chunked: trailer %v", resp.Trailer)
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("the backend accepted %d connections, want 2 (one closed by the close-delimited response)", n)
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 6})
}

// TestOwnLoopUpstreamBreaksOff: an upstream that closes in the middle of
// a response: the client gets the response cut short and its connection
// closed (it cannot tell otherwise), and the request is counted with the
// status that was sent.
func TestOwnLoopUpstreamBreaksOff(t *testing.T) {
	deps := newDeps(t)
	be := rawBackend(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
	})
	addr, _ := ownProxy(t, deps, be, nil)
	c, br := dialRaw(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err == nil || string(b) != "only ten.." {
		t.Errorf("body %q, %v: want the ten bytes and an unexpected EOF", b, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection after the broken response: %v, want EOF", err)
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 1})
}

// TestOwnLoopClientGone: a client that closes in the middle of its
// request body is recorded as 499, and nothing reaches the upstream's
// handler as a complete request; a client that times out while the
// upstream works is recorded as 499 too, and the upstream's work is
// cancelled (its connection closed) rather than waited for.
func TestOwnLoopClientGone(t *testing.T) {
	deps := newDeps(t)
	var complete atomic.Int64
	started := make(chan struct{}, 1)
	cancelled := make(chan bool, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upload" {
			started <- struct{}{}
		}
		if _, err := io.ReadAll(r.Body); err == nil {
			complete.Add(1)
		}
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(20 * time.Second):
				cancelled <- false
			case <-r.Context().Done():
				cancelled <- true
			}
		}
	}))
	t.Cleanup(be.Close)
	addr, _ := ownProxy(t, deps, hostOf(be), nil)
	c, _ := dialRaw(t, addr)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\n"+strings.Repeat("a", 5000))
	select { // the upload is in progress
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the upload did not reach the upstream")
	}
	c.Close()
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 4xx": 1})
	cl := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := cl.Get("http://" + addr + "/slow"); err == nil {
		t.Fatal("the slow request did not time out on the client")
	}
	// The proxy does not wait for the upstream: it closes the upstream
	// connection once it sees the client gone.
	if !<-cancelled {
		t.Error("the upstream worked on the request of a client that had left until its end")
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 4xx": 2})
	if n := complete.Load(); n != 1 {
		t.Errorf("the upstream read %d complete bodies, want 1 (the slow request's empty one)", n)
	}
}

// TestOwnLoopHandOff: on one connection, requests the loop takes and ones
// it hands to net/http (HTTP/1.0, a chunked request body, an upgrade) are all
// answered, in order, and counted once each.
func TestOwnLoopHandOff(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	addr, _ := ownProxy(t, deps, hostOf(be), nil)
	c, br := dialRaw(t, addr)
	io.WriteString(c, "GET /status/200 HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("own loop: %d", resp.StatusCode)
	}
	io.WriteString(c, "GET /status/202 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, _ := readResp(t, br, "GET"); resp.StatusCode != 202 {
		t.Fatalf("HTTP/1.0 (net/http): %d", resp.StatusCode)
	}
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
	if resp, _ := readResp(t, br, "POST"); resp.StatusCode != 200 {
		t.Fatalf("chunked request body (net/http): %d", resp.StatusCode)
	}
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "ping\n")
	if line, err := br.ReadString('\n'); line != "ping\n" {
		t.Fatalf("websocket echo: %q %v", line, err)
	}
	c.Close()
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 2xx": 3, "loopback 127.0.0.1 1xx": 1})
}

// TestOwnLoopTimeouts: a head that does not complete within read_header
// gets 408, a body that does not arrive within request gets 408, a
// connection that sends nothing is closed and counted as idle.
func TestOwnLoopTimeouts(t *testing.T) {
	deps := newDeps(t)
	be, _ := echoBackend(t)
	addr, p := ownProxy(t, deps, hostOf(be), func(c *config.ProxyConfig) {
		c.Timeouts = config.ProxyTimeouts{ReadHeader: 300 * time.Millisecond, Request: 600 * time.Millisecond}
	})
	for _, tc := range []struct{ name, req string }{
		{"head", "GET / HTTP/1.1\r\nHost: h\r\n"},
		{"body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"},
	} {
		c, br := dialRaw(t, addr)
		io.WriteString(c, tc.req)
		line, err := br.ReadString('\n')
		if line != "HTTP/1.1 408 Request Timeout\r\n" {
			t.Errorf("%s: got %q (%v), want 408", tc.name, line, err)
		}
	}
	waitCodes(t, deps.Collector, map[string]uint64{"loopback 127.0.0.1 4xx": 2})
	c, _ := dialRaw(t, addr)
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("idle connection: %d %v, want EOF", n, err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return p.idleClosed.Load() == 1 }, "one connection closed idle")
}
