package httpstats_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/httpstats"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
)

type fixture struct {
	coll    *collector.Collector
	addr    string
	entries chan httpstats.Entry
	srv     *http.Server
}

func newFixture(t *testing.T, tlsOn bool) *fixture {
	t.Helper()
	attr, coll := fixtures.Loopback(t)
	f := &fixture{coll: coll, entries: make(chan httpstats.Entry, 100)}
	stats := httpstats.New(httpstats.Options{Collector: coll, Log: func(e *httpstats.Entry) {
		c := *e
		c.Request = nil
		f.entries <- c
	}})
	ln, err := stats.Listen(context.Background(), "tcp", "127.0.0.1:0", attr)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 503) })
	mux.HandleFunc("/upstream", func(w http.ResponseWriter, r *http.Request) {
		httpstats.SetUpstream(w, "10.0.0.1:80")
		w.WriteHeader(204)
	})
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 300 * time.Millisecond, MaxHeaderBytes: 1024, ErrorLog: nil}
	stats.Instrument(f.srv)
	if tlsOn {
		ts := httptest.NewUnstartedServer(nil)
		ts.EnableHTTP2 = true
		ts.StartTLS()
		f.srv.TLSConfig = ts.TLS.Clone()
		ts.Close()
		go f.srv.ServeTLS(ln, "", "")
	} else {
		go f.srv.Serve(ln)
	}
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *fixture) codes() map[string]uint64 {
	return fixtures.CollectorRequests(f.coll)
}

// raw sends a raw request and returns the first response line ("" if none).
func raw(t *testing.T, addr, req string, wait time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	c.SetReadDeadline(time.Now().Add(wait))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

func TestHTTP1Outcomes(t *testing.T) {
	tests := []struct {
		name, req, want, code string
	}{
		{"ok", "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 OK", "2xx"},
		{"not found", "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 404 Not Found", "4xx"},
		{"5xx", "GET /fail HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "HTTP/1.1 503 Service Unavailable", "5xx"},
		{"bad request line", "BLAH\r\n\r\n", "HTTP/1.1 400 Bad Request", "4xx"},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 8000) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large", "4xx"},
		{"slowloris", "GET /ok HTTP/1.1\r\nHost: x\r\n", "", "4xx"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			if got := raw(t, f.addr, tc.req, 3*time.Second); got != tc.want {
				t.Fatalf("response %q, want %q", got, tc.want)
			}
			if !waitRecorded(f.coll, 1) {
				t.Fatal("not recorded")
			}
			want := map[string]uint64{"loopback 127.0.0.1 " + tc.code: 1}
			if got := f.codes(); len(got) != 1 || got["loopback 127.0.0.1 "+tc.code] != 1 {
				t.Errorf("codes %v, want %v", got, want)
			}
			e := <-f.entries
			if e.RequestBytes == 0 || e.Info.Tag != "loopback" {
				t.Errorf("entry %+v", e)
			}
			if tc.name == "slowloris" && e.Status != 408 {
				t.Errorf("slowloris status %d, want 408", e.Status)
			}
		})
	}
}

// TestKeepAliveBytes: three requests on one connection are recorded with
// their own byte counts and the upstream annotation.
func TestKeepAliveBytes(t *testing.T) {
	f := newFixture(t, false)
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := "GET /upstream HTTP/1.1\r\nHost: x\r\n\r\n"
	for range 3 {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		e := <-f.entries
		if e.Status != 204 || e.RequestBytes != uint64(len(req)) || e.ResponseBytes == 0 || e.Upstream != "10.0.0.1:80" {
			t.Errorf("entry %+v", e)
		}
	}
	if got := f.codes()["loopback 127.0.0.1 2xx"]; got != 3 {
		t.Errorf("2xx = %d, want 3", got)
	}
}

func TestTLSAndH2(t *testing.T) {
	f := newFixture(t, true)
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		resp, err := (&http.Client{Transport: tr}).Get("https://" + f.addr + "/ok")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
			t.Errorf("proto %d, want %d", resp.ProtoMajor, want)
		}
		tr.CloseIdleConnections()
		e := <-f.entries
		if e.Status != 200 || e.RequestBytes == 0 || e.ResponseBytes == 0 {
			t.Errorf("h2=%v entry %+v", h2, e)
		}
	}
	if got := f.codes()["loopback 127.0.0.1 2xx"]; got != 2 {
		t.Errorf("2xx = %d, want 2", got)
	}
}
