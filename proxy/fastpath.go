package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// The fast path forwards plain HTTP/1.1 requests on its own pool of
// upstream connections, in the handler's goroutine: no Transport read and
// write loops, no request clone. Upgrades, Expect: 100-continue, chunked
// request bodies and trailers take httputil.ReverseProxy instead.

// fastPathOK reports whether r can take the fast path.
func fastPathOK(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.Header.Get("Upgrade") != "" || r.Header.Get("Expect") != "" || len(r.Trailer) > 0 {
		return false
	}
	return r.ContentLength >= 0 && len(r.TransferEncoding) == 0
}

// hopHeaders are removed in both directions (RFC 9110 7.6.1).
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// forwardedHeaders are set by the proxy on the upstream request
// (X-Forwarded-For extends the client's chain).
var forwardedHeaders = map[string]bool{"X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true}

// skipHeader: hop-by-hop, or named by Connection.
func skipHeader(k string, conn []string) bool {
	return hopHeaders[k] || connectionNames(conn, k)
}

// namedInConnection reports whether h's Connection header names key (which
// makes it hop-by-hop: it is dropped, RFC 9110 7.6.1).
func namedInConnection(h http.Header, key string) bool {
	return connectionNames(h["Connection"], key)
}

func connectionNames(conn []string, k string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" && http.CanonicalHeaderKey(f) == k {
				return true
			}
		}
	}
	return false
}

// writeRequest writes r to the upstream with X-Forwarded-* set.
func writeRequest(bw *bufio.Writer, r *http.Request) error {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	uri := r.RequestURI
	if uri == "" || uri[0] != '/' && uri != "*" {
		uri = r.URL.RequestURI()
	}
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	conn := r.Header["Connection"]
	for k, vs := range r.Header {
		if skipHeader(k, conn) || forwardedHeaders[k] || k == "Host" || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("X-Forwarded-For: ")
	if !connectionNames(conn, "X-Forwarded-For") {
		for _, v := range r.Header["X-Forwarded-For"] {
			bw.WriteString(v)
			bw.WriteString(", ")
		}
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	bw.WriteString(host)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	bw.WriteString(r.Host)
	if r.TLS != nil {
		bw.WriteString("\r\nX-Forwarded-Proto: https\r\n")
	} else {
		bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	}
	if r.ContentLength > 0 {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
	if r.ContentLength > 0 {
		if _, err := io.CopyN(bw, r.Body, r.ContentLength); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// fastForward proxies r on one of b's upstream connections. Errors before
// the response started are returned for upstreamError; later ones abort
// the response. A request that fails on a reused connection before any
// byte of the response arrived is sent again once, on a new connection,
// when it can be (replayable); when it cannot, the failure is returned as a
// staleConnError, which is not charged to the server.
func (p *pool) fastForward(w http.ResponseWriter, r *http.Request, b *backend) error {
	cb := bodyOf(r)
	for attempt := 0; ; attempt++ {
		uc, reused, err := b.conns.get(r.Context(), attempt > 0)
		if err != nil {
			return err
		}
		// A client that goes away interrupts the wait for the upstream's
		// response (recorded as 499, like nginx), instead of holding the
		// handler until the upstream timeout.
		stop := context.AfterFunc(r.Context(), func() { uc.c.SetDeadline(time.Now()) })
		resp, err := roundTrip(uc, r, b.conns.timeout)
		if !stop() && err == nil {
			// Cancelled as the response arrived: the connection's deadline
			// is spoilt, and nobody waits for the answer.
			resp.Body.Close()
			err = r.Context().Err()
		}
		if err != nil {
			uc.c.Close()
			if cerr := r.Context().Err(); cerr != nil {
				return cerr
			}
			if cb.clientErr() != nil || !reused || uc.read > 0 || isTimeout(err) {
				return err
			}
			if attempt == 0 && replayable(r, cb, uc.written == 0) {
				continue
			}
			return &staleConnError{err}
		}
		b.succeeded()
		p.copyResponse(w, resp, uc, b, b.conns.timeout)
		return nil
	}
}

func roundTrip(uc *upConn, r *http.Request, timeout time.Duration) (*http.Response, error) {
	if err := writeRequest(uc.bw, r); err != nil {
		return nil, err
	}
	for {
		uc.arm(timeout)
		resp, err := http.ReadResponse(uc.br, r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				return nil, errors.New("upstream switched protocols without an upgrade request")
			}
			return resp, nil
		}
		resp.Body.Close() // 1xx informational: skip
	}
}

// copyResponse sends resp to the client and returns the connection to the
// pool when it can carry another request.
func (p *pool) copyResponse(w http.ResponseWriter, resp *http.Response, uc *upConn, b *backend, timeout time.Duration) {
	h := w.Header()
	conn := resp.Header["Connection"]
	for k, vs := range resp.Header {
		if !skipHeader(k, conn) {
			h[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	buf := p.bufs.Get()
	defer p.bufs.Put(buf)
	var flusher http.Flusher
	if resp.ContentLength < 0 {
		flusher, _ = w.(http.Flusher)
	}
	for {
		uc.arm(timeout)
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				uc.c.Close()
				panic(http.ErrAbortHandler)
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			uc.c.Close()
			p.failed(b)
			panic(http.ErrAbortHandler)
		}
	}
	resp.Body.Close()
	if resp.Close || uc.br.Buffered() > 0 {
		uc.c.Close()
		return
	}
	b.conns.put(uc)
}
