package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"time"
)

// The own loop's response side: the upstream's response head, parsed
// strictly, and its body relayed to the client.

// respHead is a parsed response head; slices point into the upstream
// connection's buffer.
type respHead struct {
	n             int
	status        int
	statusLine    []byte // after "HTTP/1.x "
	contentLength int64  // -1: none
	chunked       bool
	close         bool // the upstream closes the connection after it
	conn          connTokens
}

var (
	errRespMore = errors.New("incomplete response head")
	errRespHead = errors.New("malformed upstream response head")
	errRespBig  = errors.New("upstream response head too large")
	errResp101  = errors.New("upstream switched protocols without an upgrade request")
	errRespBody = errors.New("malformed upstream response body")
)

// parseRespHead parses a response head strictly (CRLF line ends, token
// field names, field values without control characters, one
// Content-Length, Transfer-Encoding only "chunked", not with Content-Length
// and not in HTTP/1.0): the proxy reuses the connection on the framing it
// finds, so it takes none it is not sure of.
func parseRespHead(buf []byte, rh *respHead) (int, error) {
	*rh = respHead{contentLength: -1}
	eol := bytes.IndexByte(buf, '\n')
	if eol < 0 {
		return 0, errRespMore
	}
	line := buf[:eol]
	if len(line) < 13 || line[len(line)-1] != '\r' || string(line[:7]) != "HTTP/1." || (line[7] != '0' && line[7] != '1') || line[8] != ' ' {
		return 0, errRespHead
	}
	line = line[:len(line)-1]
	for _, d := range line[9:12] {
		if !isDigit(d) {
			return 0, errRespHead
		}
	}
	if len(line) > 12 && line[12] != ' ' {
		return 0, errRespHead
	}
	for _, ch := range line[12:] {
		if ch < ' ' && ch != '\t' || ch == 0x7f {
			return 0, errRespHead
		}
	}
	rh.status = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	rh.statusLine = line[9:]
	rh.close = line[7] == '0'
	i := eol + 1
	nCL, nTE := 0, 0
	for {
		eol := bytes.IndexByte(buf[i:], '\n')
		if eol < 0 {
			return 0, errRespMore
		}
		line := buf[i : i+eol]
		i += eol + 1
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return 0, errRespHead
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			break
		}
		colon := 0
		for colon < len(line) && tchar[line[colon]] {
			colon++
		}
		if colon == 0 || colon == len(line) || line[colon] != ':' {
			return 0, errRespHead
		}
		name := line[:colon]
		value, r := fieldValue(line[colon+1:])
		if r != reasonNone {
			return 0, errRespHead
		}
		switch {
		case len(name) == 14 && asciiEqualFold(name, "Content-Length"):
			nCL++
			n, ok := parseContentLength(value)
			if !ok || nCL > 1 {
				return 0, errRespHead
			}
			rh.contentLength = n
		case len(name) == 17 && asciiEqualFold(name, "Transfer-Encoding"):
			nTE++
			if nTE > 1 || !asciiEqualFold(value, "chunked") {
				return 0, errRespHead
			}
			rh.chunked = true
		case len(name) == 10 && asciiEqualFold(name, "Connection"):
			closes, ok := rh.conn.add(value)
			rh.close = rh.close || closes
			if !ok {
				return 0, errRespHead
			}
		}
	}
	// Transfer-Encoding with Content-Length (smuggling's sign), or in an
	// HTTP/1.0 response (which net/http reads until close).
	if rh.chunked && (nCL > 0 || buf[7] == '0') {
		return 0, errRespHead
	}
	rh.n = i
	return i, nil
}

// readResponseHead reads the response head into uc's buffer, skipping
// informational (1xx) responses.
func (c *h1conn) readResponseHead(uc *upConn, timeout time.Duration, rh *respHead) error {
	for {
		b, _ := uc.br.Peek(uc.br.Buffered())
		if len(b) > 0 {
			n, err := parseRespHead(b, rh)
			if err == nil {
				switch {
				case rh.status == http.StatusSwitchingProtocols:
					return errResp101
				case rh.status < 200:
					uc.br.Discard(n)
					continue
				}
				return nil
			}
			if err != errRespMore {
				return err
			}
		}
		if uc.br.Buffered() == uc.br.Size() {
			return errRespBig
		}
		uc.arm(timeout)
		// Let the other connections run while the upstream works: the
		// read then more often finds the response than EAGAIN.
		runtime.Gosched()
		if _, err := uc.br.Peek(uc.br.Buffered() + 1); err != nil && uc.br.Buffered() == len(b) {
			return err
		}
	}
}

// Response body framings.
const (
	bodyNone = iota
	bodyLength
	bodyChunked // relayed as it comes, followed by a chunkState
	bodyEOF     // until the upstream closes: chunked to the client
)

// relay sends the response to the client and puts the upstream
// connection back when it can carry another request. It returns whether
// the client connection can.
func (c *h1conn) relay(pl *pool, b *backend, uc *upConn, rh *respHead) bool {
	mode := bodyEOF
	switch {
	case bstr(c.h.method) == http.MethodHead || rh.status == http.StatusNoContent || rh.status == http.StatusNotModified:
		mode = bodyNone
	case rh.chunked:
		mode = bodyChunked
	case rh.contentLength >= 0:
		mode = bodyLength
	}
	if c.s.own.closing.Load() {
		c.close = true
	}
	// The head.
	tokens := rh.conn.list()
	head, _ := uc.br.Peek(rh.n)
	o := append(c.out[:0], "HTTP/1.1 "...)
	o = append(o, rh.statusLine...)
	o = append(o, "\r\n"...)
	forEachLine(head, func(name, line []byte) {
		if isHop(name) || named(tokens, name) {
			return
		}
		o = append(o, line...)
	})
	if mode == bodyChunked || mode == bodyEOF {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	if c.close {
		o = append(o, "Connection: close\r\n"...)
	}
	o = append(o, "\r\n"...)
	c.out = o
	c.status = rh.status
	all, _ := uc.br.Peek(uc.br.Buffered())
	avail := all[rh.n:]
	timeout := b.conns.timeout
	reusable := !rh.close && mode != bodyEOF
	var werr error
	switch mode {
	case bodyNone:
		werr = c.writeRaw(o)
		uc.br.Discard(rh.n)
	case bodyLength:
		k := int(min(int64(len(avail)), rh.contentLength))
		werr = c.writev(o, avail[:k])
		uc.br.Discard(rh.n + k)
		if werr == nil {
			if rest := rh.contentLength - int64(k); rest > 0 {
				var rerr error
				werr, rerr = c.copyResponse(uc, timeout, rest, nil)
				if rerr != nil {
					return c.abort(pl, b, uc, rerr)
				}
			}
		}
	case bodyChunked:
		var cs chunkState
		k, done, r := cs.feed(avail, nil)
		if r != reasonNone {
			return c.abort(pl, b, uc, errRespBody)
		}
		werr = c.writev(o, avail[:k])
		uc.br.Discard(rh.n + k)
		if k < len(avail) {
			reusable = false // bytes after the response
		}
		if werr == nil && !done {
			var rerr error
			werr, rerr = c.copyResponse(uc, timeout, -1, &cs)
			if rerr != nil {
				return c.abort(pl, b, uc, rerr)
			}
		}
	case bodyEOF:
		if len(avail) > 0 {
			werr = c.writeChunk(o, avail)
		} else {
			werr = c.writeRaw(o)
		}
		uc.br.Discard(len(all))
		for werr == nil {
			buf := c.p.bufs.Get()
			uc.arm(timeout)
			n, err := uc.br.Read(buf)
			if n > 0 {
				werr = c.writeChunk(nil, buf[:n])
			}
			c.p.bufs.Put(buf)
			if err == io.EOF {
				if werr == nil {
					werr = c.writeRawString("0\r\n\r\n")
				}
				break
			}
			if err != nil {
				return c.abort(pl, b, uc, err)
			}
		}
	}
	if werr != nil {
		// The client is gone mid-response: as net/http's abort, the
		// status sent is what is recorded.
		uc.c.Close()
		return false
	}
	if reusable && !uc.spoilt && uc.br.Buffered() == 0 {
		b.conns.put(uc)
	} else {
		uc.c.Close()
	}
	return !c.close
}

// abort ends a response the upstream broke off: both connections close
// (the client sees the response cut short), and the server is charged.
func (c *h1conn) abort(pl *pool, b *backend, uc *upConn, err error) bool {
	uc.c.Close()
	pl.failed(b)
	pl.log.Warn("upstream error", "upstream", pl.name, "server", b.addr, "status", c.status, "err", err)
	return false
}

// copyResponse copies rest bytes of the body (or, with cs, up to the end of
// the chunked body) from uc to the client. It returns the client's write
// error and the upstream's read error.
func (c *h1conn) copyResponse(uc *upConn, timeout time.Duration, rest int64, cs *chunkState) (werr, rerr error) {
	buf := c.p.bufs.Get()
	defer c.p.bufs.Put(buf)
	for {
		p := buf
		if cs == nil {
			p = buf[:min(int64(len(buf)), rest)]
		}
		uc.arm(timeout)
		n, err := uc.br.Read(p)
		k := n
		done := false
		if cs != nil && n > 0 {
			var r reason
			k, done, r = cs.feed(p[:n], nil)
			if r != reasonNone {
				return nil, errRespBody
			}
			if k < n {
				uc.spoilt = true // bytes after the response: not reused
			}
		}
		if k > 0 {
			if werr := c.writeRaw(p[:k]); werr != nil {
				return werr, nil
			}
		}
		if cs == nil {
			rest -= int64(n)
			if rest == 0 {
				return nil, nil
			}
		} else if done {
			return nil, nil
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// writeChunk writes pre (if any) and data as one chunk, in one writev.
func (c *h1conn) writeChunk(pre, data []byte) error {
	h := strconv.AppendInt(c.chunkHdr[:0], int64(len(data)), 16)
	h = append(h, '\r', '\n')
	var n int
	var err error
	if pre != nil {
		n, err = c.write(pre, h, data, crlf)
	} else {
		n, err = c.write(h, data, crlf)
	}
	c.respN += uint64(n)
	return err
}

var crlf = []byte("\r\n")
