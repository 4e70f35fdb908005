package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzParseResponseHead: the own loop's response head parser against
// http.ReadResponse. The loop relays a response and reuses its upstream
// connection on the framing parseRespHead finds, so it must never accept
// what net/http rejects, nor frame it differently: whatever it accepts,
// net/http accepts with the same status, the same framing (chunked or the
// same Content-Length) and, where the loop keeps the connection, net/http
// keeps it too. It may reject more (bare LF, obs-fold, repeated
// Content-Length, Transfer-Encoding other than one chunked).
func FuzzParseResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-A, keep-alive\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var rh respHead
		n, err := parseRespHead(in, &rh)
		if err != nil {
			return
		}
		resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), &http.Request{Method: "GET"})
		if rerr != nil {
			t.Fatalf("parseRespHead accepted %q (%d bytes), net/http rejects it: %v", in, n, rerr)
		}
		if resp.StatusCode != rh.status {
			t.Fatalf("%q: status %d, net/http %d", in, rh.status, resp.StatusCode)
		}
		if rh.status < 200 || rh.status == 204 || rh.status == 304 {
			return
		}
		switch {
		case rh.chunked:
			if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
				t.Fatalf("%q: chunked, net/http %v", in, resp.TransferEncoding)
			}
		case rh.contentLength >= 0:
			if resp.ContentLength != rh.contentLength || len(resp.TransferEncoding) > 0 {
				t.Fatalf("%q: Content-Length %d, net/http %d %v", in, rh.contentLength, resp.ContentLength, resp.TransferEncoding)
			}
		default:
			if resp.ContentLength != -1 || len(resp.TransferEncoding) > 0 {
				t.Fatalf("%q: until close, net/http %d %v", in, resp.ContentLength, resp.TransferEncoding)
			}
		}
		// relay reuses the connection only after a framed body.
		if reuse := !rh.close && (rh.chunked || rh.contentLength >= 0); reuse && resp.Close {
			t.Fatalf("%q: the loop would reuse the connection, net/http closes it", in)
		}
	})
}
