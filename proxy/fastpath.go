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
	"sync"
	"time"
)

// The fast path forwards plain HTTP/1.1 requests on its own pool of
// upstream connections, in the handler's goroutine: no Transport read and
// write loops, no request clone. Upgrades, Expect: 100-continue, chunked
// request bodies and trailers take httputil.ReverseProxy instead.

// upConn is an idle-able upstream connection.
type upConn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	deadline time.Time // read deadline set on c
}

// arm makes sure a read on uc times out after between timeout and 1.5 ×
// timeout without data: the deadline is moved only when less than timeout
// is left, so that most requests set no timer at all.
func (uc *upConn) arm(timeout time.Duration) {
	if timeout <= 0 {
		return
	}
	now := time.Now()
	if uc.deadline.Sub(now) < timeout {
		uc.deadline = now.Add(timeout + timeout/2)
		uc.c.SetReadDeadline(uc.deadline)
	}
}

// upstreamConns keeps a backend's idle connections (LIFO, bounded).
type upstreamConns struct {
	addr    string
	dialer  *net.Dialer
	timeout time.Duration // response headers
	mu      sync.Mutex
	idle    []*upConn
}

const maxIdlePerBackend = 256

func (u *upstreamConns) get(ctx context.Context) (*upConn, bool, error) {
	u.mu.Lock()
	if n := len(u.idle); n > 0 {
		c := u.idle[n-1]
		u.idle = u.idle[:n-1]
		u.mu.Unlock()
		return c, true, nil
	}
	u.mu.Unlock()
	c, err := u.dialer.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, false, err
	}
	return &upConn{c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 8<<10)}, false, nil
}

func (u *upstreamConns) put(c *upConn) {
	u.mu.Lock()
	if len(u.idle) < maxIdlePerBackend {
		u.idle = append(u.idle, c)
		u.mu.Unlock()
		return
	}
	u.mu.Unlock()
	c.c.Close()
}

func (u *upstreamConns) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle = nil
	u.mu.Unlock()
	for _, c := range idle {
		c.c.Close()
	}
}

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
	"X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// skipHeader: hop-by-hop, or named by Connection.
func skipHeader(k string, conn []string) bool {
	if hopHeaders[k] {
		return true
	}
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if textproto.TrimString(f) != "" && http.CanonicalHeaderKey(textproto.TrimString(f)) == k {
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
		if skipHeader(k, conn) || k == "Host" || k == "Content-Length" {
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
	for _, v := range r.Header["X-Forwarded-For"] {
		bw.WriteString(v)
		bw.WriteString(", ")
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
// the response.
func (p *pool) fastForward(w http.ResponseWriter, r *http.Request, b *backend) error {
	bodyless := r.ContentLength == 0
	for attempt := 0; ; attempt++ {
		uc, reused, err := b.conns.get(r.Context())
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
			// A reused connection the upstream closed meanwhile: once more
			// on a fresh one, when nothing can have been consumed.
			var ne net.Error
			if reused && bodyless && attempt == 0 && !(errors.As(err, &ne) && ne.Timeout()) {
				continue
			}
			return err
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
		if !skipHeader(k, conn) || k == "X-Forwarded-For" || k == "X-Forwarded-Host" || k == "X-Forwarded-Proto" {
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
