package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/httpstats"
)

// The proxy's own HTTP/1.1 serving loop (proxy.http1_loop: own) serves a
// plaintext client connection in one goroutine with one fixed buffer: the
// request head is parsed in place by parseHead (the gate's parser), the
// upstream request is written with one writev on a pooled upstream
// connection, and the response head is parsed and relayed with the first
// body bytes in one writev. Per request there is no goroutine, no map and,
// in the common case, no deadline change. What the loop does not take
// (HTTP/1.0, upgrades, Expect, chunked request bodies, targets not in
// origin form, heads larger than its buffer, malformed heads) is handed,
// with the bytes already read, to the listener's net/http server through
// its queue: that request and everything after it on the connection are
// served exactly as with http1_loop net_http.

// h1Buf is the per-connection buffer: a head that does not fit goes to
// net/http (which takes heads up to max_header_bytes).
const h1Buf = 4 << 10

// h1Mem is a connection's memory: the buffer, and where the upstream
// request head and the response head are built (kept with its capacity, so
// that a new connection does not grow it again from nothing).
type h1Mem struct {
	buf [h1Buf]byte
	out []byte
}

// h1OutKeep bounds the out capacity a pooled h1Mem keeps.
const h1OutKeep = 16 << 10

var h1Mems = sync.Pool{New: func() any { return &h1Mem{out: make([]byte, 0, 1024)} }}

// Connection states for drain.
const (
	h1Idle    int32 = iota // waiting for a request's first byte
	h1Active               // a request is being served
	h1Closing              // drain closed it while idle
)

// h1conn is one client connection served by the loop.
type h1conn struct {
	p   *Proxy
	l   *listener
	s   *server
	lc  *limitedConn
	hc  *httpstats.Conn // nil: accounting off
	tcp sockConn
	buf []byte
	off int // unread bytes are buf[off:end]
	end int
	rdl time.Time // read deadline set on tcp

	state    atomic.Int32
	waiting  atomic.Pointer[upConn] // waiting for this upstream's response head
	seen     *upConn                // the watchdog's: waiting at its last look
	clientIP netip.Addr             // X-Forwarded-For's
	h        reqHead
	out      []byte   // upstream request head, then the response head
	raw      *rawConn // tcp's system calls; nil: through tcp
	nagle    bool     // TCP_NODELAY not set yet (rawaccept.go): set before the second write
	wrote    bool     // a write was made
	chunkHdr [20]byte

	// The request in progress.
	t0      time.Time
	status  int
	reqN    uint64 // bytes of the request read from the client
	respN   uint64 // bytes of the response written to the client
	close   bool   // close the connection after this request
	ua      []byte
	backend string
	hlen    int       // head length
	hoff    int       // head offset in buf
	rq      h1Request // what scanHead found
}

// h1Request is what the loop found in a head besides parseHead's results.
type h1Request struct {
	conn      connTokens
	xff       [8][]byte
	nxff      int
	closeConn bool
	unusual   bool // send to net/http
}

// serveOwn takes a plaintext connection into the own loop, or returns
// false when it cannot (not a TCP connection underneath).
func (p *Proxy) serveOwn(l *listener, s *server, c net.Conn) bool {
	lc, ok := c.(*limitedConn)
	if !ok {
		return false
	}
	var hc *httpstats.Conn
	nc := lc.Conn
	if v, ok := nc.(*httpstats.Conn); ok {
		hc, nc = v, v.Conn
	}
	var (
		tcp      sockConn
		nagle    bool
		clientIP netip.Addr
	)
	switch v := nc.(type) {
	case *net.TCPConn:
		tcp = v
	case *attribution.Conn:
		tcp = v.TCPConn
	case *fileConn:
		tcp, nagle, clientIP = v, true, v.remote.Addr().Unmap()
	default:
		return false
	}
	hcn := &h1conn{p: p, l: l, s: s, lc: lc, hc: hc, tcp: tcp, nagle: nagle, clientIP: clientIP}
	hcn.state.Store(h1Active) // idle once it waits for a request
	hcn.raw = newRawConn(tcp) // nil when tcp has no file descriptor: then tcp's own Read and Write
	if !s.own.add(hcn) {
		return false
	}
	s.own.watchOnce.Do(func() { go s.own.watch() })
	go hcn.serve()
	return true
}

func (c *h1conn) series() collector.Series { return c.hc.Series() }

// sockConn is a client connection's socket: a *net.TCPConn (accepted by
// the net package) or a *fileConn (rawaccept.go).
type sockConn interface {
	net.Conn
	syscall.Conn
}

// setRead sets the read deadline unless it is already d.
func (c *h1conn) setRead(d time.Time) {
	if !d.Equal(c.rdl) {
		c.rdl = d
		c.tcp.SetReadDeadline(d)
	}
}

// idleDeadline makes the read deadline fall between idle and 1.25 × idle
// from now, moving it only when it does not: most requests set none.
func (c *h1conn) idleDeadline(now time.Time, idle time.Duration) {
	if idle <= 0 {
		c.setRead(time.Time{})
		return
	}
	lo, hi := now.Add(idle), now.Add(idle+idle/4)
	if c.rdl.Before(lo) || c.rdl.After(hi) {
		c.setRead(now.Add(idle + idle/8))
	}
}

func (c *h1conn) serve() {
	m := h1Mems.Get().(*h1Mem)
	c.buf, c.out = m.buf[:], m.out[:0]
	handedOff := false
	defer func() {
		c.s.own.remove(c)
		if !handedOff {
			c.lc.Close()
		}
		if cap(c.out) <= h1OutKeep {
			m.out = c.out[:0]
		}
		c.buf, c.out = nil, nil
		h1Mems.Put(m)
	}()
	// What net/http's RemoteAddr gives ReverseProxy, without its strings:
	// a v4-mapped address as IPv4, an IPv6 one with its zone.
	if c.clientIP.IsValid() {
		// Known from the own accept.
	} else if ra, ok := c.tcp.RemoteAddr().(*net.TCPAddr); ok {
		c.clientIP = ra.AddrPort().Addr().Unmap()
	}
	t := c.s.settings.timeouts
	limit := c.s.settings.maxHeaderBytes
	first := true
	// The head's deadline: net/http's, the shorter of read_header and
	// request.
	headTimeout := t.ReadHeader
	if headTimeout <= 0 || t.Request > 0 && t.Request < headTimeout {
		headTimeout = t.Request
	}
	if headTimeout > 0 {
		c.setRead(time.Now().Add(headTimeout))
	}
	for {
		// Wait for a request's first byte.
		if c.off == c.end {
			c.off, c.end = 0, 0
			if !first {
				c.idleDeadline(time.Now(), t.Idle)
			}
			// Idle: a drain from here on closes the connection (it sets
			// closing first, then wakes the idle ones).
			c.state.Store(h1Idle)
			if c.s.own.closing.Load() {
				return
			}
			// Let the other connections run first: the client's next
			// request is then more often already there, and the read
			// does not come back empty (EAGAIN) before the wait.
			runtime.Gosched()
			n, err := c.read(c.buf)
			if n == 0 {
				if first && err != nil && errors.Is(err, os.ErrDeadlineExceeded) && c.state.Load() != h1Closing {
					c.p.idleClosed.Add(1)
				}
				return
			}
			c.end = n
			if !c.state.CompareAndSwap(h1Idle, h1Active) {
				return // drain closed it meanwhile
			}
			if first {
				c.lc.markHeard()
			}
		} else {
			c.state.Store(h1Active)
		}
		c.t0 = time.Now()
		c.status, c.reqN, c.respN, c.close, c.ua, c.backend = 0, 0, 0, false, nil, ""
		if c.hc != nil {
			c.series().AddReading(1)
		}
		// Read the head; one deadline for all of it.
		headDL := false
		var hl int
		for {
			var e *headError
			hl, e = parseHead(c.buf[c.off:c.end], limit, &c.h)
			if e == nil {
				break
			}
			if e != errNeedMore || c.end-c.off == len(c.buf) {
				// Malformed, or larger than the buffer: net/http and the
				// gate answer it exactly as without the loop.
				c.handOff()
				handedOff = true
				return
			}
			if c.off > 0 {
				c.end = copy(c.buf, c.buf[c.off:c.end])
				c.off = 0
			}
			if !headDL {
				headDL = true
				if headTimeout > 0 {
					c.setRead(c.t0.Add(headTimeout))
				} else {
					c.setRead(time.Time{})
				}
			}
			n, err := c.read(c.buf[c.end:])
			c.end += n
			if err != nil && n == 0 {
				status := http.StatusBadRequest
				if errors.Is(err, os.ErrDeadlineExceeded) {
					status = http.StatusRequestTimeout
					c.writeRawString(response408)
				}
				c.reqN = uint64(c.end - c.off)
				if c.hc != nil {
					c.series().AddReading(-1)
				}
				c.record(status, nil)
				return
			}
		}
		first = false
		c.hlen, c.hoff = hl, c.off
		c.rq = h1Request{}
		c.scanHead(hl, &c.rq)
		if c.rq.unusual {
			c.handOff()
			handedOff = true
			return
		}
		if c.hc != nil {
			s := c.series()
			s.AddReading(-1)
			s.AddWriting(1)
		}
		c.close = c.rq.closeConn
		ok := c.forward(hl)
		if c.hc != nil {
			c.series().AddWriting(-1)
		}
		c.record(c.status, c.head(hl))
		if !ok || c.close {
			return
		}
		if c.s.own.closing.Load() {
			return
		}
	}
}

// head returns the current request's head bytes (for the access log).
func (c *h1conn) head(hl int) []byte { return c.buf[c.hoff : c.hoff+hl] }

// scanHead looks at the fields of an accepted head for what the loop needs
// and what it does not take.
func (c *h1conn) scanHead(hl int, rq *h1Request) {
	h := &c.h
	if h.minor != 1 || h.upgrade || h.chunked || len(h.target) == 0 || h.target[0] != '/' {
		rq.unusual = true
		return
	}
	forEachField(c.buf[c.off+h.start:c.off+hl], func(name, value []byte) bool {
		switch {
		case len(name) == 10 && asciiEqualFold(name, "Connection"):
			closes, ok := rq.conn.add(value)
			rq.closeConn = rq.closeConn || closes
			if !ok {
				rq.unusual = true
				return false
			}
		case len(name) == 6 && asciiEqualFold(name, "Expect"):
			rq.unusual = true
			return false
		case len(name) == 15 && asciiEqualFold(name, "X-Forwarded-For"):
			if rq.nxff == len(rq.xff) {
				rq.unusual = true
				return false
			}
			rq.xff[rq.nxff] = value
			rq.nxff++
		case len(name) == 10 && asciiEqualFold(name, "User-Agent"):
			if c.ua == nil {
				c.ua = value
			}
		}
		return true
	})
}

// forEachField calls f with each field of a head parseHead accepted (from
// its request line on), until f returns false.
func forEachField(head []byte, f func(name, value []byte) bool) {
	i := bytes.IndexByte(head, '\n') + 1
	for i < len(head) {
		eol := bytes.IndexByte(head[i:], '\n')
		line := head[i : i+eol-1]
		i += eol + 1
		if len(line) == 0 {
			return
		}
		colon := bytes.IndexByte(line, ':')
		if !f(line[:colon], trimOWS(line[colon+1:])) {
			return
		}
	}
}

// forEachLine is forEachField with the whole field line (CRLF included).
func forEachLine(head []byte, f func(name, line []byte)) {
	i := bytes.IndexByte(head, '\n') + 1
	for i < len(head) {
		eol := bytes.IndexByte(head[i:], '\n')
		line := head[i : i+eol+1]
		i += eol + 1
		if len(line) == 2 {
			return
		}
		colon := bytes.IndexByte(line, ':')
		f(line[:colon], line)
	}
}

func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// isHop: hop-by-hop fields (RFC 9110 7.6.1), as hopHeaders.
func isHop(name []byte) bool {
	switch len(name) {
	case 2:
		return asciiEqualFold(name, "Te")
	case 7:
		return asciiEqualFold(name, "Trailer") || asciiEqualFold(name, "Upgrade")
	case 10:
		return asciiEqualFold(name, "Connection") || asciiEqualFold(name, "Keep-Alive")
	case 16:
		return asciiEqualFold(name, "Proxy-Connection")
	case 17:
		return asciiEqualFold(name, "Transfer-Encoding")
	case 18:
		return asciiEqualFold(name, "Proxy-Authenticate")
	case 19:
		return asciiEqualFold(name, "Proxy-Authorization")
	}
	return false
}

func named(tokens [][]byte, name []byte) bool {
	for _, t := range tokens {
		if len(t) == len(name) && asciiEqualFold(t, bstr(name)) {
			return true
		}
	}
	return false
}

// bstr views b as a string for the duration of a call that does not keep it.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// read reads from the client.
func (c *h1conn) read(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.read(p)
	}
	return c.tcp.Read(p)
}

// write writes bufs to the client in one writev.
func (c *h1conn) write(bufs ...[]byte) (int, error) {
	if c.nagle {
		if c.wrote {
			c.setNoDelay()
		}
		c.wrote = true
	}
	if c.raw != nil {
		return c.raw.writev(bufs...)
	}
	return writeBuffers(c.tcp, bufs)
}

// setNoDelay sets TCP_NODELAY on a connection accepted without it, as
// nginx does on a keep-alive connection: before its second write. The first
// write of a connection leaves nothing unacknowledged for Nagle's algorithm
// to wait on.
func (c *h1conn) setNoDelay() {
	c.nagle = false
	if rc, err := c.tcp.SyscallConn(); err == nil {
		setNoDelay(rc)
	}
}

// writeRaw writes b to the client, counted as response bytes.
func (c *h1conn) writeRaw(b []byte) error {
	n, err := c.write(b)
	c.respN += uint64(n)
	return err
}

func (c *h1conn) writeRawString(s string) error {
	return c.writeRaw(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// writev writes the buffers to the client in one system call.
func (c *h1conn) writev(bufs ...[]byte) error {
	n, err := c.write(bufs...)
	c.respN += uint64(n)
	return err
}

// record ends the request: the outcome into the series and the access log.
func (c *h1conn) record(status int, head []byte) {
	if c.hc == nil {
		return
	}
	now := time.Now()
	o := collector.Outcome{Status: status, RequestBytes: c.reqN, ResponseBytes: c.respN, Duration: now.Sub(c.t0)}
	c.series().Record(o)
	if a := c.p.alog.Load(); a.enabled() {
		e := httpstats.Entry{Time: now, Info: c.hc.Info(), Upstream: c.backend, Outcome: o}
		var req *rawRequest
		if head != nil {
			req = &rawRequest{method: c.h.method, host: c.h.host, uri: c.h.target, ua: c.ua}
		}
		a.writeRaw(&e, req)
	}
}

// clientGone reports whether the client has closed its side or reset the
// connection (one non-blocking peek; pipelined bytes are not consumed).
func (c *h1conn) clientGone() bool {
	if c.off < c.end {
		return false
	}
	return peekGone(c.tcp)
}

// errorResponse writes what http.Error writes, with Connection: close when
// the connection ends after it.
func (c *h1conn) errorResponse(status int) {
	c.status = status
	text := http.StatusText(status)
	b := c.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"...)
	if c.close {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)+1), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, text...)
	b = append(b, '\n')
	c.out = b
	c.writeRaw(b)
}

// connTokens are the tokens of a head's Connection fields (RFC 9110 7.6.1),
// in the head's buffer, at most 16 of them.
type connTokens struct {
	tok [16][]byte
	n   int
}

// add takes the tokens of one Connection field value: whether one of them
// is "close", and false when there are more tokens than it holds.
func (t *connTokens) add(value []byte) (closes, ok bool) {
	for tok := range bytes.SplitSeq(value, []byte{','}) {
		tok = trimOWS(tok)
		if len(tok) == 0 {
			continue
		}
		if asciiEqualFold(tok, "close") {
			closes = true
		}
		if t.n == len(t.tok) {
			return closes, false
		}
		t.tok[t.n] = tok
		t.n++
	}
	return closes, true
}

func (t *connTokens) list() [][]byte { return t.tok[:t.n] }
