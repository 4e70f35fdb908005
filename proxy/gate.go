package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// gate makes a plaintext connection strict: request heads are held back
// until parseHead has accepted them (net/http never sees a byte of a head
// the proxy rejects), and request bodies are followed (Content-Length, or
// chunked with chunkState) to find where the next request starts. A
// rejected head is answered with nginx's status and the connection closed;
// a malformed chunked body fails the body read (400, never charged to the
// upstream). The head bytes are copied once, from gate's buffer to
// net/http's.
type gate struct {
	limit int
	buf   []byte // unreleased bytes are buf[off:end]
	off   int
	end   int
	st    uint8
	// stRelease: head bytes still to hand over; stLength: body bytes left.
	left    int64
	chunks  chunkState
	upgrade bool // the released head asked for an upgrade: pass through from here
	raw     bool
	pending *headError // rejected head, answered once net/http reads again
	bodyErr error
	h       reqHead
}

const (
	stHead uint8 = iota
	stRelease
	stLength
	stChunked
)

// errBadChunk is the body read error of a malformed chunked body.
var errBadChunk = errors.New("malformed chunked request body")

// errRejected is returned to net/http after the gate answered a head.
var errRejected = errors.New("request rejected")

// gateBuf is a gate's first buffer: most heads fit; it grows up to the
// limit (plus an ignored CRLF and one byte to see the limit passed) for
// those that do not.
const gateBuf = 2 << 10

func newGate(limit int) *gate {
	return &gate{limit: limit, buf: make([]byte, min(gateBuf, limit+3))}
}

// room makes sure buf can take n more bytes after end (moving the unread
// bytes to the front first), growing it when it must.
func (g *gate) room(n int) {
	if g.off > 0 && g.end+n > len(g.buf) {
		g.end = copy(g.buf, g.buf[g.off:g.end])
		g.off = 0
	}
	if g.end+n > len(g.buf) {
		nb := make([]byte, max(2*len(g.buf), g.end+n))
		copy(nb, g.buf[:g.end])
		g.buf = nb
	}
}

// readGated is headerConn.Read with a gate.
func (c *headerConn) readGated(p []byte) (int, error) {
	g := c.g
	for {
		if g.raw {
			if g.off < g.end {
				n := copy(p, g.buf[g.off:g.end])
				g.off += n
				return n, nil
			}
			return c.Conn.Read(p)
		}
		if g.bodyErr != nil {
			return 0, g.bodyErr
		}
		if g.pending != nil {
			return 0, c.answer(g.pending)
		}
		switch g.st {
		case stRelease:
			n := copy(p, g.buf[g.off:g.off+int(g.left)])
			g.off += n
			g.left -= int64(n)
			if g.left == 0 {
				g.afterHead()
			}
			return n, nil
		case stLength, stChunked:
			var n int
			if g.off < g.end {
				n = copy(p, g.buf[g.off:g.end])
				g.off += n
			} else {
				var err error
				n, err = c.Conn.Read(p)
				if n == 0 {
					return 0, err
				}
			}
			k := g.body(p[:n])
			if k == 0 && g.bodyErr != nil {
				return 0, g.bodyErr
			}
			if k < n { // the next request's first bytes: back to the buffer
				g.unread(p[k:n])
			}
			return k, nil
		default: // stHead
			if g.off < g.end {
				hl, e := parseHead(g.buf[g.off:g.end], g.limit, &g.h)
				switch {
				case e == nil:
					g.released(hl)
					c.served.Store(true)
					continue
				case e != errNeedMore:
					g.pending = e
					continue
				}
			}
			if g.off > 0 { // keep the partial head at the start of buf
				g.end = copy(g.buf, g.buf[g.off:g.end])
				g.off = 0
			}
			if g.end == len(g.buf) && len(g.buf) < g.limit+3 {
				g.room(min(len(g.buf), g.limit+3-len(g.buf)))
			}
			n, err := c.Conn.Read(g.buf[g.end:min(len(g.buf), g.limit+3)])
			g.end += n
			if err != nil {
				if n > 0 {
					continue
				}
				if g.end > 0 && !c.active.Load() {
					c.started.Store(true)
					c.timeout(err)
				}
				if g.end == 0 && !c.served.Load() && c.idle != nil && errors.Is(err, os.ErrDeadlineExceeded) {
					// Connected and sent nothing within read_header: closed
					// without a response (as nginx does), counted here.
					c.idle.Add(1)
				}
				return 0, err
			}
		}
	}
}

// released starts handing over an accepted head of length hl.
func (g *gate) released(hl int) {
	g.off += g.h.start // an ignored empty line before the request line
	g.left = int64(hl - g.h.start)
	g.st = stRelease
	g.upgrade = g.h.upgrade
}

// afterHead: the head is out, follow its body.
func (g *gate) afterHead() {
	switch {
	case g.upgrade:
		// An upgraded connection carries another protocol: from here the
		// gate passes bytes through. A refused upgrade closes the
		// connection (upgradeWriter), so no further request is read
		// without the gate.
		g.raw = true
	case g.h.chunked:
		g.st, g.chunks = stChunked, chunkState{}
	case g.h.contentLength > 0:
		g.st, g.left = stLength, g.h.contentLength
	default:
		g.st = stHead
	}
}

// body follows the body through p and returns how many bytes of p belong
// to it; a malformed chunked body sets bodyErr.
func (g *gate) body(p []byte) int {
	if g.st == stLength {
		k := int(min(int64(len(p)), g.left))
		g.left -= int64(k)
		if g.left == 0 {
			g.st = stHead
		}
		return k
	}
	k, done, r := g.chunks.feed(p, nil)
	if r != reasonNone {
		g.bodyErr = errBadChunk
		return k
	}
	if done {
		g.st = stHead
	}
	return k
}

// unread puts bytes read past the body back in front of the buffer.
func (g *gate) unread(b []byte) {
	if g.off >= len(b) {
		g.off -= len(b)
		copy(g.buf[g.off:], b)
		return
	}
	// Read straight into net/http's buffer: the buffer is empty.
	g.off, g.end = 0, 0
	g.room(len(b))
	g.end = copy(g.buf, b)
}

// answer sends the rejection of a head (once), unless a handler is running
// (this is net/http's background read while a request is served): then
// the request in progress finishes first, and the rejected bytes are not
// read by anyone meanwhile.
func (c *headerConn) answer(e *headError) error {
	if c.active.Load() {
		var scratch [512]byte
		for {
			if _, err := c.Conn.Read(scratch[:]); err != nil {
				return err
			}
		}
	}
	if c.answered.CompareAndSwap(false, true) {
		text := http.StatusText(e.status)
		body := strconv.Itoa(e.status) + " " + text
		c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(c.Conn, "HTTP/1.1 "+body+"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\n\r\n"+body); err == nil {
			lingeringClose(c.Conn)
		}
	}
	return errRejected
}

// Lingering close (nginx's lingering_close, lingering_time and
// lingering_timeout): a rejected client may still be sending its request.
// Closing with its bytes unread makes the kernel answer them with a reset,
// which can reach the client before it has read the answer (or fail its
// write), so the answer is lost. After the answer the connection is shut
// for writing (the client reads the answer, then end of stream) and what
// the client still sends is read and dropped, for at most lingerTime and
// while it keeps sending within lingerTimeout.
const (
	lingerTime    = 5 * time.Second
	lingerTimeout = 500 * time.Millisecond
)

func lingeringClose(c net.Conn) {
	for nc := c; nc != nil; {
		if cw, ok := nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			break
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	end := time.Now().Add(lingerTime)
	var scratch [4096]byte
	for {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		d := now.Add(lingerTimeout)
		if d.After(end) {
			d = end
		}
		c.SetReadDeadline(d)
		if _, err := c.Read(scratch[:]); err != nil {
			return
		}
	}
}
