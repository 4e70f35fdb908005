package httpstats

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/collector"
)

// phase is where an HTTP/1 connection is in its current request.
type phase uint8

const (
	phaseIdle     phase = iota // between requests
	phaseReading               // first byte seen, handler not started
	phaseHandling              // handler running
	phaseDone                  // handler returned, response not yet flushed
	phaseHijacked              // handler hijacked the connection
)

// Conn is an accepted connection with its attribution, its series and the
// byte counters and state of the request being served on it. It is created
// by a Listener; InfoOf and attribution.InfoOf see through it.
type Conn struct {
	net.Conn
	st     *Stats
	info   attribution.Info
	series collector.Series

	read, written atomic.Uint64
	ph            atomic.Uint32 // phase
	closed        atomic.Bool
	countConn     bool // opened and closed in the connection series (see Options.ConnectionsCountedElsewhere)

	// The fields below are only used by the connection's serving goroutine
	// (net/http's conn.serve, which also runs HTTP/1 handlers and ConnState
	// hooks): no lock. plaintext is set by ConnContext before it starts.
	plaintext bool
	above     bool // phases follow the plaintext reported by PlainRead/PlainWrite
	start     time.Time
	readMark  uint64
	writeMark uint64
	timedOut  bool
	errStatus int // status line the server wrote while reading (plaintext)
	rw        writer
	entry     Entry // for Options.Log, HTTP/1
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Info returns the connection's attribution.
func (c *Conn) Info() attribution.Info { return c.info }

// Series returns the series the connection records into.
func (c *Conn) Series() collector.Series { return c.series }

func (c *Conn) phase() phase { return phase(c.ph.Load()) }

func (c *Conn) setPhase(p phase) { c.ph.Store(uint32(p)) }

// Read counts bytes and, on a plaintext connection between requests, starts
// the next request at its first byte.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Add(uint64(n))
	}
	if !c.above {
		c.PlainRead(n, err)
	}
	return n, err
}

// PlaintextAbove makes c's request phases follow the plaintext that a
// wrapper above a TLS layer on c reads and writes (it reports them with
// PlainRead and PlainWrite) rather than c's own bytes (ciphertext). The
// wrapper is what the server serves, so the connection counts as
// plaintext: a request the server rejects while reading it is recorded
// with the status it wrote. Call it before the server sees the connection.
func (c *Conn) PlaintextAbove() { c.above = true }

// PlainRead reports a read of the request stream (see Read): the first
// byte between requests starts the next request.
func (c *Conn) PlainRead(n int, err error) {
	// Between requests only the serving goroutine reads; net/http's
	// background reader runs while a handler does, when the phase is
	// not idle.
	if n > 0 && c.plaintext && c.ph.CompareAndSwap(uint32(phaseIdle), uint32(phaseReading)) {
		c.start = time.Now()
		c.timedOut = false
		c.errStatus = 0
		c.series.AddReading(1)
	}
	if err != nil && c.phase() == phaseReading && errors.Is(err, os.ErrDeadlineExceeded) {
		c.timedOut = true
	}
}

// Write counts bytes; while a request is still being read, what the server
// writes is its own error response, whose status is kept.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(uint64(n))
	if !c.above {
		c.PlainWrite(p)
	}
	return n, err
}

// PlainWrite reports a write of the response stream (see Write): while a
// request is still being read, it is the server's own error response.
func (c *Conn) PlainWrite(p []byte) {
	if c.phase() == phaseReading && c.plaintext && c.errStatus == 0 {
		c.errStatus = parseStatusLine(p)
	}
}

// ReadFrom keeps the sendfile/splice path of the wrapped connection.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	var (
		n   int64
		err error
	)
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{c.Conn}, r)
	}
	c.written.Add(uint64(n))
	return n, err
}

// Close closes the connection and ends it in the series (once).
func (c *Conn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) && c.countConn {
		c.series.ConnClosed()
	}
	return err
}

// begin starts the handler of an HTTP/1 request.
func (c *Conn) begin(w http.ResponseWriter, r *http.Request) *writer {
	switch c.phase() {
	case phaseReading:
		c.series.AddReading(-1)
	default: // TLS, or a request read ahead: it starts with its handler
		c.start = time.Now()
	}
	c.setPhase(phaseHandling)
	c.series.AddWriting(1)
	c.rw = writer{ResponseWriter: w, req: r}
	return &c.rw
}

// end is called when the handler returns; a hijacked connection's request
// ends here, others when the response has been flushed (ConnState).
func (c *Conn) end() {
	if c.phase() != phaseHijacked {
		c.setPhase(phaseDone)
		return
	}
	status := c.rw.status
	if status == 0 {
		status = http.StatusSwitchingProtocols
	}
	c.series.AddWriting(-1)
	c.finish(status)
}

// flushed ends the request in progress when the server reports the
// connection idle or closed.
func (c *Conn) flushed(closing bool) {
	var status int
	switch c.phase() {
	case phaseReading:
		if !closing {
			return
		}
		c.series.AddReading(-1)
		switch {
		case c.errStatus != 0:
			status = c.errStatus
		case c.timedOut:
			status = http.StatusRequestTimeout
		default:
			status = http.StatusBadRequest
		}
	case phaseHandling, phaseDone:
		c.series.AddWriting(-1)
		status = c.rw.status
		if status == 0 {
			status = http.StatusOK
		}
	default:
		return
	}
	c.finish(status)
}

func (c *Conn) hijacked() {
	if c.phase() == phaseHandling {
		c.setPhase(phaseHijacked)
	}
}

// finish records the request in progress.
func (c *Conn) finish(status int) {
	now := time.Now()
	rd, wr := c.read.Load(), c.written.Load()
	o := collector.Outcome{Status: status, RequestBytes: rd - c.readMark, ResponseBytes: wr - c.writeMark, Duration: now.Sub(c.start)}
	c.readMark, c.writeMark = rd, wr
	c.setPhase(phaseIdle)
	req, upstream := c.rw.req, c.rw.upstream
	c.rw = writer{}
	c.series.Record(o)
	c.st.log(c, req, upstream, now, o)
}

// parseStatusLine returns the status of "HTTP/1.x NNN ..." at the start of
// p, or 0.
func parseStatusLine(p []byte) int {
	if len(p) < 12 || string(p[:7]) != "HTTP/1." || p[8] != ' ' {
		return 0
	}
	s := 0
	for _, b := range p[9:12] {
		if b < '0' || b > '9' {
			return 0
		}
		s = s*10 + int(b-'0')
	}
	return s
}
