package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// fastBackend answers every request on a keep-alive connection with a
// fixed 12-byte response, reading nothing but the header block: a backend
// that costs next to nothing, so that the proxy's cost dominates.
func fastBackend(b *testing.B) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nhello world\n")
	return rawBackend(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 { // end of the header block
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	})
}

// load sends keep-alive GETs on one connection per parallel goroutine and
// reads the Content-Length-framed responses.
func load(b *testing.B, addr string) {
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n")
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 16<<10)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			n := -1
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					b.Error(err)
					return
				}
				if len(line) <= 2 {
					break
				}
				if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
					n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
				}
			}
			if n < 0 {
				b.Error("no Content-Length")
				return
			}
			io.CopyN(io.Discard, br, int64(n))
		}
	})
}

// BenchmarkProxy: one request through the proxy per op, with accounting
// (attribution at accept, one outcome per request) and without, on
// net/http's serving loop and on the proxy's own (proxy.http1_loop).
//
//	go test -run '^$' -bench Proxy -benchtime 5s -count 3 -cpu 1,2 ./proxy/
func BenchmarkProxy(b *testing.B) {
	for _, run := range []struct {
		loop       string
		accounting bool
	}{{"net_http", true}, {"net_http", false}, {"own", true}, {"own", false}} {
		accounting := run.accounting
		name := run.loop + "/" + map[bool]string{true: "accounting", false: "off"}[accounting]
		b.Run(name, func(b *testing.B) {
			deps := newDeps(b)
			if !accounting {
				deps = Deps{}
			}
			addr := freeAddr(b)
			p, err := New(config.ProxyConfig{Listeners: []config.ProxyListener{{Address: addr, Upstream: "be"}},
				Upstreams: []config.ProxyUpstream{{Name: "be", Servers: []string{fastBackend(b)}}}, HTTP1Loop: run.loop}, deps)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { p.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			time.Sleep(50 * time.Millisecond)
			b.SetParallelism(16)
			b.ResetTimer()
			load(b, addr)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
