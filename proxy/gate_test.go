package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
)

// splitConn returns its data a few bytes at a time, at random.
type splitConn struct {
	net.Conn
	r   io.Reader
	rng *rand.Rand
}

func (c *splitConn) Read(p []byte) (int, error) {
	n := 1 + c.rng.IntN(64)
	return c.r.Read(p[:min(n, len(p))])
}

// TestGateSplits: pipelined requests with Content-Length and chunked
// bodies, cut into random pieces, come out of the gate as they went in:
// net/http reads every request and body unchanged.
func TestGateSplits(t *testing.T) {
	var in bytes.Buffer
	var want []string
	for i := range 40 {
		body := strings.Repeat(fmt.Sprint(i%10), i*37)
		switch i % 3 {
		case 0:
			fmt.Fprintf(&in, "GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
			body = ""
		case 1:
			fmt.Fprintf(&in, "POST /%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", i, len(body), body)
		case 2:
			fmt.Fprintf(&in, "POST /%d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", i)
			for rest := body; rest != ""; {
				n := min(len(rest), 1+i)
				fmt.Fprintf(&in, "%x;e=1\r\n%s\r\n", n, rest[:n])
				rest = rest[n:]
			}
			in.WriteString("0\r\nT: x\r\n\r\n")
		}
		want = append(want, fmt.Sprintf("/%d %s", i, body))
	}
	for seed := range uint64(20) {
		c := &headerConn{Conn: nil, g: newGate(4096)}
		c.Conn = &splitConn{r: bytes.NewReader(in.Bytes()), rng: rand.New(rand.NewPCG(seed, 1))}
		br := bufio.NewReader(c)
		for i, w := range want {
			req, err := http.ReadRequest(br)
			if err != nil {
				t.Fatalf("seed %d request %d: %v", seed, i, err)
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				t.Fatalf("seed %d request %d body: %v", seed, i, err)
			}
			if got := req.URL.Path + " " + string(b); got != w {
				t.Fatalf("seed %d request %d: %q, want %q", seed, i, got, w)
			}
		}
		if _, err := http.ReadRequest(br); err != io.EOF {
			t.Fatalf("seed %d: after the last request: %v", seed, err)
		}
	}
}

// BenchmarkParseHead: the gate's parse of a browser-sized request head.
func BenchmarkParseHead(b *testing.B) {
	head := []byte("GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Connection: keep-alive\r\nCookie: a=b; c=d\r\nUpgrade-Insecure-Requests: 1\r\n\r\n")
	b.Run("gate", func(b *testing.B) {
		var h reqHead
		b.SetBytes(int64(len(head)))
		b.ReportAllocs()
		for b.Loop() {
			if _, e := parseHead(head, 16<<10, &h); e != nil {
				b.Fatal(e)
			}
		}
	})
	// net/http's reader on the same head, for scale (it also builds the
	// Request, its URL and header map).
	b.Run("net-http", func(b *testing.B) {
		r := bytes.NewReader(head)
		br := bufio.NewReader(r)
		b.SetBytes(int64(len(head)))
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(head)
			br.Reset(r)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}
