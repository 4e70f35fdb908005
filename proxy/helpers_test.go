package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
)

func newDeps(t testing.TB) Deps {
	t.Helper()
	attr, coll := fixtures.Loopback(t)
	return Deps{Attributor: attr, Collector: coll}
}

// running starts p and stops it (draining) at cleanup.
func running(t testing.TB, p *Proxy) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	// wait until every listener has a server
	testenv.Eventually(t, 10*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.runCtx != nil
	}, "the proxy running")
}

// rawBackend serves each connection accepted on a loopback port with
// serve (closing it after) until the test ends; it returns host:port.
func rawBackend(tb testing.TB, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// codes returns requests per "tag vip code".
func codes(c *collector.Collector) map[string]uint64 {
	return fixtures.CollectorRequests(c)
}

func waitCodes(t testing.TB, c *collector.Collector, want map[string]uint64) {
	t.Helper()
	fixtures.WaitCounts(t, 30*time.Second, "codes", func() (map[string]uint64, error) { return codes(c), nil }, want)
}

// waitLines waits until file holds n lines: a request is counted before it
// is logged, and the file is flushed every fileFlushInterval.
func waitLines(t testing.TB, file string, n int) {
	t.Helper()
	testenv.EventuallyNil(t, 30*time.Second, file, func() error {
		data, _ := os.ReadFile(file)
		if lines := strings.Count(string(data), "\n"); lines < n {
			return fmt.Errorf("%d lines, want %d", lines, n)
		}
		return nil
	})
}

// writeCert writes a self-signed certificate for names and returns it.
func writeCert(t testing.TB, dir string, names ...string) config.ProxyCert {
	t.Helper()
	cert, key := testenv.WriteSelfSigned(t, dir, names...)
	return config.ProxyCert{Cert: cert, Key: key}
}
