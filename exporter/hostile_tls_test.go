package exporter

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// serveGuardedTLS is serveGuarded with TLS and basic auth (user alice,
// password secret); the server's log goes to log.
func serveGuardedTLS(t *testing.T, maxConns int, headerTimeout time.Duration, log io.Writer) (*Server, string) {
	t.Helper()
	c := newTestCollector(t, collector.Config{})
	s, err := New(Options{Collector: c, MaxConnections: maxConns, ReadHeaderTimeout: headerTimeout,
		WebConfigFile: webConfig(t, true), Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, serveLoopback(t, s)
}

var (
	clientTLS = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}} //nolint:gosec // self-signed test certificate
	clientH2  = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}       //nolint:gosec // self-signed test certificate
)

// h2Preface is an HTTP/2 client's connection preface and an empty SETTINGS
// frame.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// dialTLS connects and completes a TLS handshake (HTTP/1.1 by ALPN).
func dialTLS(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 20 * time.Second}, "tcp", addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawStatusTLS is rawStatus over TLS.
func rawStatusTLS(t *testing.T, addr, req string) string {
	t.Helper()
	c := dialTLS(t, addr)
	defer c.Close()
	line, err := testenv.StatusLine(c, req)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

// scrapeTLS scrapes /metrics over TLS with alice's password, on a new
// connection, and returns the status.
func scrapeTLS(addr string) error {
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS, DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+MetricsPath, nil)
	req.SetBasicAuth("alice", "secret")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "ipng_exporter_rejected_total") {
		return fmt.Errorf("scrape: %d\n%.300s", resp.StatusCode, b)
	}
	return nil
}

// waitClosed waits until the server closes c (at most 30 s) and returns
// how long that took; with -1 when c stayed open.
func waitClosed(c net.Conn) time.Duration {
	_, d, err := testenv.ClosedWithin(c, 30*time.Second)
	if err != nil {
		return -1
	}
	return d
}

// TestHostileRequestsTLS is TestHostileRequests on a TLS listener with
// basic auth: what is sent after the handshake gets the same answers and
// counts; a client that never completes the handshake (silent, or stalled
// in the middle of its ClientHello) is closed at the header timeout and
// counted idle_timeout (an HTTP/2 one without its preface at net/http's
// 10 s preface timeout); one that does not speak TLS is closed at once and
// counted tls_handshake; a 401 is an answer, not a rejection; none of them
// is logged one line each; a scrape with the password gets through after
// each.
func TestHostileRequestsTLS(t *testing.T) {
	log := &testenv.SyncBuffer{}
	s, addr := serveGuardedTLS(t, 64, time.Second, log)
	want := map[string]int{}
	check := func(step string) {
		t.Helper()
		for r, n := range want {
			waitRejected(t, s, r, n)
		}
		if err := scrapeTLS(addr); err != nil {
			t.Fatalf("after %s: %v", step, err)
		}
		for _, r := range rejectReasons {
			if got := rejected(s, r); got != want[r] {
				t.Errorf("after %s: rejected{reason=%q} = %d, want %d", step, r, got, want[r])
			}
		}
	}

	big := "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"
	if got := rawStatusTLS(t, addr, big); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Errorf("64 KiB header: %q, want 431", got)
	}
	want[reasonBadRequest]++
	check("64 KiB header")
	if got := rawStatusTLS(t, addr, "NOT A REQUEST\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("malformed request: %q, want 400", got)
	}
	want[reasonBadRequest]++
	check("malformed request")

	// Slowloris after the handshake.
	c := dialTLS(t, addr)
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n")
	closed := make(chan time.Duration)
	go func() { closed <- waitClosed(c) }()
	for i := 0; ; i++ {
		select {
		case d := <-closed:
			if d < 0 || d > 10*time.Second {
				t.Errorf("slowloris client closed after %v, header timeout 1s", d)
			}
			goto slowDone
		case <-time.After(100 * time.Millisecond):
		}
		if i > 300 {
			t.Fatal("the slowloris client is still connected after 30 s")
		}
		fmt.Fprintf(c, "X-%d: a\r\n", i)
		if i == 0 {
			// Served during the attack.
			if err := scrapeTLS(addr); err != nil {
				t.Fatalf("scrape during the slowloris: %v", err)
			}
		}
	}
slowDone:
	c.Close()
	want[reasonSlowRequest]++
	check("slowloris headers")

	// Silent after the handshake.
	c = dialTLS(t, addr)
	if d := waitClosed(c); d < 0 || d > 10*time.Second {
		t.Errorf("silent TLS client closed after %v", d)
	}
	c.Close()
	want[reasonIdleTimeout]++
	check("silent after the handshake")

	// No ClientHello at all.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if d := waitClosed(raw); d < 0 || d > 10*time.Second {
		t.Errorf("client without ClientHello closed after %v", d)
	}
	raw.Close()
	want[reasonIdleTimeout]++
	check("no ClientHello")

	// Stalled in the middle of a ClientHello: the record header announces
	// 512 bytes, 10 follow.
	raw, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 1, 2, 3, 4})
	if err := scrapeTLS(addr); err != nil {
		t.Fatalf("scrape during the stalled handshake: %v", err)
	}
	if d := waitClosed(raw); d < 0 || d > 10*time.Second {
		t.Errorf("client stalled in its ClientHello closed after %v", d)
	}
	raw.Close()
	want[reasonIdleTimeout]++
	check("stalled ClientHello")

	// HTTP/2 negotiated, no client preface: closed at the HTTP/2 server's
	// preface timeout (10 s, net/http's), counted idle_timeout.
	h2, err := tls.Dial("tcp", addr, clientH2)
	if err != nil {
		t.Fatal(err)
	}
	if p := h2.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	if d := waitClosed(h2); d < 0 || d > 20*time.Second {
		t.Errorf("HTTP/2 client without a preface closed after %v", d)
	}
	h2.Close()
	want[reasonIdleTimeout]++
	check("HTTP/2 without a preface")

	// Not TLS: plain HTTP (net/http answers 400) and garbage.
	if got := rawStatus(t, addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.0 400") {
		t.Errorf("plain HTTP to the TLS port: %q, want 400", got)
	}
	want[reasonTLSHandshake]++
	check("plain HTTP")
	raw, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("\x00\x01\x02garbage garbage garbage\r\n\r\n"))
	if d := waitClosed(raw); d < 0 {
		t.Error("garbage on the TLS port: not closed within 30 s")
	}
	raw.Close()
	want[reasonTLSHandshake]++
	check("garbage")

	// A TCP check (connect, close) is not a rejection, as on plain HTTP.
	raw, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Close()
	// Without the password: 401, not a rejection of the connection.
	resp, err := (&http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS}}).Get("https://" + addr + MetricsPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the password: %d, want 401", resp.StatusCode)
	}
	check("TCP check and 401")

	if n := strings.Count(log.String(), "handshake"); n > 0 {
		t.Errorf("%d log lines about TLS handshakes (a flood of them would flood the log; they are counted):\n%s", n, log)
	}
}

// TestTenThousandIdleConnectionsTLS: 10 000 connections to a TLS listener,
// a third never sending a ClientHello, a third silent after the handshake
// (HTTP/1.1), a third idle after the HTTP/2 preface: the server holds at most MaxConnections,
// each one closed to make room is counted evicted, goroutines stay bounded,
// a scrape with the password gets through during the flood, and the log
// stays quiet.
func TestTenThousandIdleConnectionsTLS(t *testing.T) {
	const n, max = 10000, 64
	log := &testenv.SyncBuffer{}
	s, addr := serveGuardedTLS(t, max, 10*time.Minute, log)
	base := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		if i%3 != 0 {
			tc := tls.Client(c, map[bool]*tls.Config{true: clientTLS, false: clientH2}[i%3 == 1])
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				t.Fatalf("handshake %d: %v", i, err)
			}
			if i%3 == 2 {
				io.WriteString(tc, h2Preface)
			}
			c = tc
		}
		conns = append(conns, c)
		if i == n/2 {
			if err := scrapeTLS(addr); err != nil {
				t.Fatalf("scrape during the flood: %v", err)
			}
		}
	}
	// The scrape's connection made room for itself, and left it.
	waitRejected(t, s, reasonEvicted, n-max)
	waitOpen(t, s, max)
	// An HTTP/2 connection has two goroutines (its serving loop and its
	// frame reader).
	if g := runtime.NumGoroutine(); g > base+2*max+50 {
		t.Errorf("%d goroutines with %d idle connections (%d before): not bounded by the limit %d", g, n, base, max)
	}
	if err := scrapeTLS(addr); err != nil {
		t.Fatalf("scrape after the flood: %v", err)
	}
	for _, r := range rejectReasons {
		if got := rejected(s, r); r != reasonEvicted && got != 0 {
			t.Errorf("rejected{reason=%q} = %d, want 0", r, got)
		}
	}
	if n := strings.Count(log.String(), "\n"); n > 20 {
		t.Errorf("%d log lines during the flood:\n%.2000s", n, log)
	}
}
