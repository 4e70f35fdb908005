package exporter

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// serveGuarded runs a server on a loopback port and returns its address.
func serveGuarded(t *testing.T, maxConns int, headerTimeout time.Duration) (*Server, string) {
	t.Helper()
	c := newTestCollector(t, collector.Config{})
	s, err := New(Options{Collector: c, MaxConnections: maxConns, ReadHeaderTimeout: headerTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return s, serveLoopback(t, s)
}

// serveLoopback serves s on a loopback port until the test ends and
// returns the address.
func serveLoopback(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func rejected(s *Server, reason string) int {
	return int(testutil.ToFloat64(s.guard.rejected.WithLabelValues(reason)))
}

// waitRejected waits (bounded) until the counter of reason reaches want.
func waitRejected(t *testing.T, s *Server, reason string, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for rejected(s, reason) != want {
		if time.Now().After(deadline) {
			t.Fatalf("ipng_exporter_rejected_total{reason=%q} = %d, want %d", reason, rejected(s, reason), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawStatus sends req on a new connection and returns the response's status line.
func rawStatus(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, err := testenv.StatusLine(c, req)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// waitOpen waits (bounded) until the server holds want connections: an
// evicted one is counted when it is chosen and open until its goroutine has
// seen it closed.
func waitOpen(t *testing.T, s *Server, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for testutil.ToFloat64(s.guard.open) != float64(want) {
		if time.Now().After(deadline) {
			t.Fatalf("open connections %v, want %d", testutil.ToFloat64(s.guard.open), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func scrapeOK(t *testing.T, addr string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + addr + MetricsPath)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "ipng_exporter_rejected_total") {
		t.Fatalf("scrape: %d\n%.300s", resp.StatusCode, b)
	}
}

// TestHostileRequests: oversized headers, a malformed request, a slowloris
// client and a silent one each get their answer (or are closed), each is
// counted once under its reason, and the port keeps serving.
func TestHostileRequests(t *testing.T) {
	s, addr := serveGuarded(t, 64, time.Second)

	big := "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
	if got := rawStatus(t, addr, big); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Errorf("64 KiB header: %q, want 431", got)
	}
	waitRejected(t, s, reasonBadRequest, 1)
	if got := rawStatus(t, addr, "NOT A REQUEST\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("malformed request: %q, want 400", got)
	}
	waitRejected(t, s, reasonBadRequest, 2)

	// Slowloris: a header line every 100 ms, never the blank line.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n")
	closed := make(chan time.Time)
	go func() {
		io.Copy(io.Discard, c) // returns when the server closes
		closed <- time.Now()
	}()
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case at := <-closed:
			if d := at.Sub(start); d > 10*time.Second {
				t.Errorf("slowloris client closed after %v, header timeout 1s", d)
			}
			goto slowDone
		case <-time.After(100 * time.Millisecond):
		}
		if i > 300 {
			t.Fatal("the slowloris client is still connected after 30 s")
		}
		fmt.Fprintf(c, "X-%d: a\r\n", i)
	}
slowDone:
	waitRejected(t, s, reasonSlowRequest, 1)

	// Silent: connects, sends nothing.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("the server sent something to a silent client")
	}
	waitRejected(t, s, reasonIdleTimeout, 1)

	scrapeOK(t, addr)
	for _, r := range []string{reasonBadRequest, reasonSlowRequest, reasonIdleTimeout, reasonEvicted, reasonOverLimit} {
		want := map[string]int{reasonBadRequest: 2, reasonSlowRequest: 1, reasonIdleTimeout: 1}[r]
		if got := rejected(s, r); got != want {
			t.Errorf("rejected{reason=%q} = %d, want %d", r, got, want)
		}
	}
}

// TestTenThousandIdleConnections: 10 000 connections that send nothing hold
// at most MaxConnections on the server (goroutines stay bounded), each one
// closed to make room is counted, and a scrape still gets through.
func TestTenThousandIdleConnections(t *testing.T) {
	const n, max = 10000, 64
	s, addr := serveGuarded(t, max, 10*time.Minute)
	base := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	waitRejected(t, s, reasonEvicted, n-max)
	waitOpen(t, s, max)
	if g := runtime.NumGoroutine(); g > base+max+50 {
		t.Errorf("%d goroutines with %d idle connections (%d before): not bounded by the limit %d", g, n, base, max)
	}
	scrapeOK(t, addr)
	if got := rejected(s, reasonOverLimit); got != 0 {
		t.Errorf("over_limit %d: idle connections could always be evicted", got)
	}
}
