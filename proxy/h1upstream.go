package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The own loop's upstream side: choosing a server, the request head it
// writes, the client's body it copies, and the failures before a response.

// forward proxies the parsed request (head of length hl at c.off) and
// returns whether the connection can carry another request. It sets
// c.status and moves c.off past the request.
func (c *h1conn) forward(hl int) bool {
	pl := c.l.pool.Load()
	bodyLen := max(c.h.contentLength, 0)
	headEnd := c.off + hl
	inBuf := min(int64(c.end-headEnd), bodyLen)
	body := c.buf[headEnd : headEnd+int(inBuf)]
	c.off = headEnd + int(inBuf)
	c.reqN = uint64(hl) + uint64(inBuf)
	rest := bodyLen - inBuf // still to be read from the client
	c.buildRequest(hl, bodyLen)
	b := pl.pick()
	for tries := 0; ; tries++ {
		if b == nil {
			c.close = c.close || rest > 0
			c.errorResponse(http.StatusBadGateway)
			return !c.close
		}
		c.backend = b.addr
		b.active.Add(1)
		ok, next := c.forwardTo(pl, b, body, rest, tries)
		b.active.Add(-1)
		if next == nil {
			return ok
		}
		b = next
	}
}

// forwardTo sends the request to b. next: a connection to b could not be
// made and the request has no body: try that backend instead.
func (c *h1conn) forwardTo(pl *pool, b *backend, body []byte, rest int64, tries int) (ok bool, next *backend) {
	for attempt := 0; ; attempt++ {
		uc, reused, err := b.conns.get(ctxBackground, attempt > 0)
		if err != nil {
			return c.upstreamFailed(pl, b, err, false, rest, tries)
		}
		// The request: head and the body bytes at hand, one writev.
		_, err = uc.writev(c.out, body)
		if err == nil && rest > 0 {
			if err = c.copyBody(uc, rest); err != nil {
				uc.c.Close()
				var ce *clientError
				if errors.As(err, &ce) {
					return c.clientFailed(ce.err), nil
				}
				return c.upstreamFailed(pl, b, err, false, rest, tries)
			}
			rest = 0
		}
		var rh respHead
		if err == nil {
			c.waiting.Store(uc)
			err = c.readResponseHead(uc, b.conns.timeout, &rh)
			if !c.waiting.CompareAndSwap(uc, nil) {
				// The watchdog found the client gone and cut the wait short.
				uc.c.Close()
				c.status = StatusClientClosed
				return false, nil
			}
		}
		if err != nil {
			uc.c.Close()
			if !reused || uc.read > 0 || isTimeout(err) {
				return c.upstreamFailed(pl, b, err, false, rest, tries)
			}
			if attempt == 0 && rest == 0 && (uc.written == 0 || c.idempotent()) {
				continue
			}
			return c.upstreamFailed(pl, b, &staleConnError{err}, true, rest, tries)
		}
		if time.Since(c.t0) > clientCheckAfter && c.clientGone() {
			// The client left while the upstream worked (nginx's 499).
			uc.c.Close()
			c.status = StatusClientClosed
			return false, nil
		}
		b.succeeded()
		return c.relay(pl, b, uc, &rh), nil
	}
}

// clientCheckAfter: a response that took longer than this is only sent
// after a check that the client is still there (it costs a system call).
const clientCheckAfter = 50 * time.Millisecond

var ctxBackground = context.Background()

// idempotent: GET, HEAD, OPTIONS, TRACE, PUT, DELETE or an Idempotency-Key
// (replayable's rule).
func (c *h1conn) idempotent() bool {
	switch bstr(c.h.method) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	found := false
	forEachField(c.head(c.hlen)[c.h.start:], func(name, _ []byte) bool {
		if asciiEqualFold(name, "Idempotency-Key") || asciiEqualFold(name, "X-Idempotency-Key") {
			found = true
			return false
		}
		return true
	})
	return found
}

// buildRequest writes the upstream request head into c.out: the request
// line, Host, the client's fields but hop-by-hop ones, those its
// Connection names, X-Forwarded-* and Content-Length (which the proxy
// sets), then X-Forwarded-For (the client's chain, extended),
// X-Forwarded-Host and X-Forwarded-Proto, and Content-Length: what
// writeRequest writes on the net/http path.
func (c *h1conn) buildRequest(hl int, bodyLen int64) {
	h := &c.h
	tokens := c.rq.conn.list()
	b := c.out[:0]
	b = append(b, h.method...)
	b = append(b, ' ')
	b = append(b, h.target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, h.host...)
	b = append(b, "\r\n"...)
	forEachLine(c.buf[c.hoff+h.start:c.hoff+hl], func(name, line []byte) {
		if isHop(name) || named(tokens, name) || skipForward(name) {
			return
		}
		b = append(b, line...)
	})
	b = append(b, "X-Forwarded-For: "...)
	if !namedString(tokens, "X-Forwarded-For") {
		for _, v := range c.rq.xff[:c.rq.nxff] {
			b = append(b, v...)
			b = append(b, ", "...)
		}
	}
	b = append(b, c.clientIP...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, h.host...)
	b = append(b, "\r\nX-Forwarded-Proto: http\r\n"...)
	if bodyLen > 0 {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, bodyLen, 10)
		b = append(b, "\r\n"...)
	}
	c.out = append(b, "\r\n"...)
}

// skipForward: fields the proxy sets itself on the upstream request.
func skipForward(name []byte) bool {
	switch len(name) {
	case 4:
		return asciiEqualFold(name, "Host")
	case 14:
		return asciiEqualFold(name, "Content-Length")
	case 15:
		return asciiEqualFold(name, "X-Forwarded-For")
	case 16:
		return asciiEqualFold(name, "X-Forwarded-Host")
	case 17:
		return asciiEqualFold(name, "X-Forwarded-Proto")
	}
	return false
}

func namedString(tokens [][]byte, name string) bool {
	for _, t := range tokens {
		if asciiEqualFold(t, name) {
			return true
		}
	}
	return false
}

// clientError is a failure reading the client's body.
type clientError struct{ err error }

func (e *clientError) Error() string { return "reading the request body: " + e.err.Error() }

// copyBody copies the rest of the request body from the client to the
// upstream, within timeouts.request of the request's first byte.
func (c *h1conn) copyBody(uc *upConn, rest int64) error {
	if t := c.s.settings.timeouts.Request; t > 0 {
		c.setRead(c.t0.Add(t))
	} else {
		c.setRead(time.Time{})
	}
	buf := c.p.bufs.Get()
	defer c.p.bufs.Put(buf)
	for rest > 0 {
		n, err := c.read(buf[:min(int64(len(buf)), rest)])
		if n > 0 {
			c.reqN += uint64(n)
			rest -= int64(n)
			if _, werr := uc.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil && rest > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return &clientError{err}
		}
	}
	return nil
}

// clientFailed answers a request whose body could not be read (408 when
// too slow, 400, or nothing when the client is gone: 499); the connection
// closes.
func (c *h1conn) clientFailed(err error) bool {
	status := clientStatus(err, false)
	c.p.log.Debug("client error", "status", status, "err", err)
	c.close = true
	if status == StatusClientClosed {
		c.status = status
		return false
	}
	c.errorResponse(status)
	return false
}

// upstreamFailed answers a request that could not be proxied, as
// pool.upstreamError does: 499 when the client is gone, else 502 or 504 on
// a timeout, charged to the server unless stale; a request without a body
// whose connection could not be made goes to another backend in service.
func (c *h1conn) upstreamFailed(pl *pool, b *backend, err error, stale bool, rest int64, tries int) (bool, *backend) {
	if c.clientGone() {
		c.status = StatusClientClosed
		return false, nil
	}
	if !stale {
		pl.failed(b)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && c.h.contentLength <= 0 && tries+1 < len(pl.backends) {
		if nb := pl.pick(); nb != nil && nb != b {
			return false, nb
		}
	}
	status := http.StatusBadGateway
	if isTimeout(err) {
		status = http.StatusGatewayTimeout
	}
	pl.log.Warn("upstream error", "upstream", pl.name, "server", b.addr, "status", status, "max_fails_counted", !stale, "err", err)
	if rest > 0 {
		c.close = true // the body's framing is lost
	}
	c.errorResponse(status)
	return !c.close, nil
}
