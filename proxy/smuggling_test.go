package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// recorded is one request as the recording backend received it.
type recorded struct {
	method, target, body string
	te                   []string
	cl                   int64
}

// recorder is a backend that parses what it receives with net/http's
// reader and records every request exactly (method, target, framing and
// body), answering each with 200 "ok".
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
	bad  int // connections on which the backend could not parse a request
}

func (rec *recorder) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if err != io.EOF {
				rec.mu.Lock()
				rec.bad++
				rec.mu.Unlock()
			}
			return
		}
		body, err := io.ReadAll(req.Body)
		rec.mu.Lock()
		if err != nil {
			rec.bad++
			rec.mu.Unlock()
			return
		}
		rec.reqs = append(rec.reqs, recorded{method: req.Method, target: req.RequestURI, body: string(body),
			te: req.TransferEncoding, cl: req.ContentLength})
		rec.mu.Unlock()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	}
}

func (rec *recorder) take() ([]recorded, int) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r, b := rec.reqs, rec.bad
	rec.reqs, rec.bad = nil, 0
	return r, b
}

// strictProxy runs a proxy with max_header_bytes 4096 in front of a
// recorder.
func strictProxy(t *testing.T) (string, *recorder) {
	rec := &recorder{}
	be := rawBackend(t, rec.serve)
	addr := freeAddr(t)
	p, err := New(config.ProxyConfig{Listeners: []config.ProxyListener{{Address: addr, Upstream: "be"}},
		Upstreams: []config.ProxyUpstream{{Name: "be", Servers: []string{be}}}, MaxHeaderBytes: 4096,
		Timeouts: config.ProxyTimeouts{ReadHeader: 5 * time.Second, Request: 5 * time.Second}}, newDeps(t))
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	return addr, rec
}

// exchange sends raw on a new connection and returns the status codes of
// the responses read until the proxy closes the connection or max arrived.
func exchange(t *testing.T, addr, raw string, max int) []int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var codes []int
	br := bufio.NewReader(c)
	for len(codes) < max {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return codes
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	return codes
}

// TestStrictParsing: what nginx 1.22 rejects, the proxy rejects with the
// same status (checked against Debian's nginx by hand, see
// docs/design.md), before anything reaches the upstream; what it accepts
// reaches the upstream once, framed as sent.
func TestStrictParsing(t *testing.T) {
	const te = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	long := strings.Repeat("a", 5000)
	for _, tc := range []struct {
		name, req string
		status    int // 0: accepted
	}{
		{"ok", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"one leading empty line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 0},
		{"chunked, lower and upper case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", 0},
		{"chunk extension", te + "1;foo=bar\r\nx\r\n0\r\n\r\n", 0},
		{"chunk size, whitespace", te + "1 \r\nx\r\n0\r\n\r\n", 0},
		{"trailer", te + "1\r\nx\r\n0\r\nX-T: 1\r\n\r\n", 0},
		{"duplicate CL, same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
		{"duplicate CL, different", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx", 400},
		{"CL plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", 400},
		{"CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\nx", 400},
		{"CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400},
		{"TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"TE chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501},
		{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501},
		{"TE twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400},
		{"space in name", "GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400},
		{"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"HTTP/2.0 line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"long request line", "GET /" + long + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
		{"large header", "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + long + "\r\n\r\n", 431},
		{"chunk size not hex", te + "zz\r\n\r\n", 400},
		{"chunk size overflow", te + "ffffffffffffffffffff\r\nx\r\n0\r\n\r\n", 400},
		{"chunk size 0x", te + "0x1\r\nx\r\n0\r\n\r\n", 400},
		{"chunk data too long", te + "1\r\nxy\r\n0\r\n\r\n", 400},
		{"chunk line bare LF", te + "1\nx\n0\n\n", 400},
		{"chunk extension control char", te + "1;a\x01\r\nx\r\n0\r\n\r\n", 400},
		{"chunk size, whitespace before extension", te + "1 ;a\r\nx\r\n0\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, rec := strictProxy(t)
			got := exchange(t, addr, tc.req, 1+btoi(tc.status != 0))
			reqs, bad := rec.take()
			if tc.status == 0 {
				if len(got) != 1 || got[0] != 200 || len(reqs) != 1 || bad != 0 {
					t.Fatalf("responses %v, upstream got %+v (%d unparsable), want one 200 and one request", got, reqs, bad)
				}
				return
			}
			if len(got) != 1 || got[0] != tc.status {
				t.Errorf("responses %v, want [%d]", got, tc.status)
			}
			// Head rejections never reach the upstream. A malformed chunked
			// body is found while the request is forwarded: its head may
			// have gone, its body never completes (the upstream sees no
			// complete request).
			if strings.HasPrefix(tc.name, "chunk") {
				for _, r := range reqs {
					t.Errorf("upstream received a complete request: %+v", r)
				}
			} else if len(reqs) != 0 || bad != 0 {
				t.Errorf("upstream received %+v (%d unparsable)", reqs, bad)
			}
		})
	}
}

// TestSmuggling: the known request smuggling vectors, each followed on the
// same connection by a request that must not be swallowed or made up: the
// proxy either rejects the connection's first request (and forwards
// nothing) or forwards exactly the requests the client framed, each with
// its body.
func TestSmuggling(t *testing.T) {
	const next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, tc := range []struct {
		name, req string
		status    int        // first response when rejected
		want      []recorded // forwarded requests when accepted
	}{
		{"CL.TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" + next, 400, nil},
		{"TE.CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n" + smuggled + "\r\n0\r\n\r\n" + next, 400, nil},
		{"TE.TE space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding : x\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + next, 400, nil},
		{"TE.TE tab value", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + next, 400, nil},
		{"TE.TE obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x\r\n chunked\r\n\r\n0\r\n\r\n" + next, 400, nil},
		{"TE.TE two fields", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + next, 400, nil},
		{"TE.TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + next, 501, nil},
		{"TE.TE list", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n" + next, 501, nil},
		{"TE.TE vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n" + next, 400, nil},
		{"TE.TE bare LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\nX: y\r\n\r\n0\r\n\r\n" + next, 400, nil},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n" + next, 400, nil},
		{"CL.CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\n" + smuggled + next, 400, nil},
		{"CL.CL same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx" + next, 400, nil},
		{"chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n" + next, 400, nil},
		{"chunk extension with LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2;\n" + smuggled + "xx\r\n0\r\n\r\n" + next, 400, nil},
		{"chunk extension quoted", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"b;c\"\r\nx\r\n0\r\n\r\n" + next, 0,
			[]recorded{{method: "POST", target: "/", body: "x", te: []string{"chunked"}, cl: -1}, {method: "GET", target: "/next", cl: 0}}},
		{"chunked then pipelined", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + next, 0,
			[]recorded{{method: "POST", target: "/", body: "abc", te: []string{"chunked"}, cl: -1}, {method: "GET", target: "/next", cl: 0}}},
		{"CL body looks like a request", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\n" + smuggled + next, 0,
			[]recorded{{method: "POST", target: "/", body: smuggled, cl: 35}, {method: "GET", target: "/next", cl: 0}}},
		{"GET with CL body", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 35\r\n\r\n" + smuggled + next, 0,
			[]recorded{{method: "GET", target: "/", body: smuggled, cl: 35}, {method: "GET", target: "/next", cl: 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, rec := strictProxy(t)
			got := exchange(t, addr, tc.req, 2)
			reqs, bad := rec.take()
			if tc.status != 0 {
				if len(got) != 1 || got[0] != tc.status {
					t.Errorf("responses %v, want [%d] and the connection closed", got, tc.status)
				}
				for _, r := range reqs {
					if r.body != "" || r.method != "POST" {
						t.Errorf("upstream received %+v", r)
					}
				}
				if len(reqs) != 0 && !strings.HasPrefix(tc.name, "chunk") {
					t.Errorf("upstream received %+v for a rejected head", reqs)
				}
				return
			}
			if bad != 0 {
				t.Errorf("%d requests the upstream could not parse", bad)
			}
			if fmt.Sprint(got) != fmt.Sprint([]int{200, 200}) {
				t.Errorf("responses %v, want two 200", got)
			}
			if fmt.Sprintf("%+v", reqs) != fmt.Sprintf("%+v", tc.want) {
				t.Errorf("upstream received\n %+v\nwant\n %+v", reqs, tc.want)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPipelinedRejection: a malformed request pipelined behind a good one
// (in the same packet) is answered after the good one's response, which
// completes; nothing of it reaches the upstream.
func TestPipelinedRejection(t *testing.T) {
	addr, rec := strictProxy(t)
	got := exchange(t, addr, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 3)
	if fmt.Sprint(got) != "[200 400]" {
		t.Errorf("responses %v, want [200 400] and the connection closed", got)
	}
	if reqs, bad := rec.take(); len(reqs) != 1 || reqs[0].target != "/first" || bad != 0 {
		t.Errorf("upstream received %+v (%d unparsable), want only /first", reqs, bad)
	}
}

// TestRefusedUpgradeCloses: the gate passes an upgrade request's
// connection through unparsed, so a refused upgrade must end the
// connection: a request sent after it is never read.
func TestRefusedUpgradeCloses(t *testing.T) {
	addr, rec := strictProxy(t)
	got := exchange(t, addr, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"+
		"GET /after HTTP/1.1\r\nHost: a\r\n\r\n", 3)
	if fmt.Sprint(got) != "[200]" {
		t.Errorf("responses %v, want [200] (upgrade refused by the backend) and the connection closed", got)
	}
	reqs, _ := rec.take()
	for _, r := range reqs {
		if r.target == "/after" {
			t.Errorf("request after a refused upgrade was forwarded: %+v", r)
		}
	}
}

// TestRejectionLingers: a client still sending its rejected request (a
// head over max_header_bytes, written in pieces after the answer came) is
// not reset: its writes succeed, it reads the 431 and then end of stream,
// as from nginx's lingering close. Closing with the rest of the request
// unread made the kernel reset the connection, which failed the client's
// next write or destroyed the answer before it was read.
func TestRejectionLingers(t *testing.T) {
	addr, rec := strictProxy(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: "+strings.Repeat("a", 8<<10)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d %q, want 431", resp.StatusCode, body)
	}
	// The answer is read, so the proxy has handled the head and decided;
	// the rest of the request still comes.
	for i := range 8 {
		if _, err := io.WriteString(c, strings.Repeat("b", 4<<10)); err != nil {
			t.Fatalf("write %d after the answer: %v (the proxy reset the connection)", i, err)
		}
	}
	if _, err := io.WriteString(c, "\r\n\r\n"); err != nil {
		t.Fatalf("end of the head: %v", err)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("after the answer: %q, %v; want end of stream", b, err)
	}
	if reqs, bad := rec.take(); len(reqs) != 0 || bad != 0 {
		t.Errorf("upstream received %+v (%d unparsable), want nothing", reqs, bad)
	}
}
