// Package logtail sends access-log lines to a UDP target (a "logtail"
// receiver, like the original nginx module's). It is used by the nginx
// ingest (one line per datagram) and by the proxy's access log (lines
// batched into datagrams of up to a byte limit).
//
// Sending never blocks the caller: a fixed set of buffers moves between the
// caller and one sender goroutine, and a line that finds none free is
// dropped and counted. Every line handed to Send ends up in exactly one of
// three counters: sent (the kernel accepted its datagram), dropped because
// the queue was full, or dropped because the write failed. The counters
// live outside the Sender (Counters), so that a reload that replaces the
// Sender keeps them, and are exported by Metrics as
// ipng_logtail_lines_sent_total and ipng_logtail_lines_dropped_total.
//
// It owns only the sending; it does not format lines (its callers do).
package logtail

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Counters count lines; see the package documentation. Safe for concurrent
// use; the zero value is ready.
type Counters struct {
	Sent       atomic.Uint64 // in datagrams the kernel accepted
	QueueFull  atomic.Uint64 // dropped: no buffer free, the sender is behind
	SendErrors atomic.Uint64 // dropped: the datagram's write failed
}

// Options configure a Sender.
type Options struct {
	// Target is the receiver's host:port (UDP). Required.
	Target string
	// Queue is how many datagrams may wait for the sender; a line that
	// needs a buffer when all are waiting is dropped. Less than 1 means 1.
	Queue int
	// Batch is the byte limit of a datagram: lines are collected until the
	// next one would not fit (a longer line goes alone), each ending in a
	// newline. 0 or less sends each line as it is, one per datagram.
	Batch int
	// FlushInterval bounds how long a partly filled datagram waits (Batch
	// only); 0 means DefaultFlushInterval.
	FlushInterval time.Duration
	// Counters receive the counts; nil means counters of the Sender's own.
	Counters *Counters
	// Logger gets the first write error (the rest are only counted).
	Logger *slog.Logger
}

// DefaultFlushInterval is Options.FlushInterval's default.
const DefaultFlushInterval = time.Second

// lineSlot is the initial capacity of a buffer in one-line mode; longer
// lines grow it once.
const lineSlot = 1024

// datagram is one buffer: the bytes to send and how many lines they hold.
type datagram struct {
	b     []byte
	lines uint64
}

// Sender sends lines to one target. Its methods are safe for concurrent use.
type Sender struct {
	conn  net.Conn
	batch int
	c     *Counters
	log   *slog.Logger

	mu     sync.Mutex
	cur    *datagram // being filled (Batch); nil when none
	closed bool

	free  chan *datagram
	queue chan *datagram
	done  chan struct{}
	wg    sync.WaitGroup
	erred atomic.Bool
}

// New dials the target (UDP: no packet is sent) and starts the sender.
func New(opts Options) (*Sender, error) {
	conn, err := net.Dial("udp", opts.Target)
	if err != nil {
		return nil, fmt.Errorf("logtail target %s: %w", opts.Target, err)
	}
	return newSender(conn, opts), nil
}

// newSender starts a Sender on conn (tests pass their own).
func newSender(conn net.Conn, opts Options) *Sender {
	n := max(opts.Queue, 1)
	s := &Sender{conn: conn, batch: opts.Batch, c: opts.Counters, log: opts.Logger,
		free: make(chan *datagram, n+1), queue: make(chan *datagram, n+1), done: make(chan struct{})}
	if s.c == nil {
		s.c = new(Counters)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	size := lineSlot
	if s.batch > 0 {
		size = s.batch
	}
	// n buffers may wait in the queue; with one more the caller can fill
	// the next while the sender writes. In one-line mode a line waits in
	// its own buffer, so n lines may wait, as before.
	bufs := n + 1
	if s.batch <= 0 {
		bufs = n
	}
	for range bufs {
		s.free <- &datagram{b: make([]byte, 0, size)}
	}
	s.wg.Add(1)
	go s.send()
	if s.batch > 0 {
		every := opts.FlushInterval
		if every <= 0 {
			every = DefaultFlushInterval
		}
		s.wg.Add(1)
		go s.flusher(every)
	}
	return s
}

// Counters returns the counters the Sender counts into.
func (s *Sender) Counters() *Counters { return s.c }

// Send queues line (copied; the caller may reuse it). It never blocks on
// the network. After Close, lines are dropped as if the queue were full.
func (s *Sender) Send(line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		s.c.QueueFull.Add(1)
		return
	}
	if s.batch <= 0 {
		d := s.take()
		if d == nil {
			return
		}
		d.b = append(d.b, line...)
		d.lines = 1
		s.queue <- d // never blocks: the queue holds every buffer
		return
	}
	need := len(line)
	if need == 0 || line[need-1] != '\n' {
		need++
	}
	if s.cur != nil && s.cur.lines > 0 && len(s.cur.b)+need > s.batch {
		s.flushLocked()
	}
	if s.cur == nil {
		if s.cur = s.take(); s.cur == nil {
			return
		}
	}
	s.cur.b = append(s.cur.b, line...)
	if len(line) == 0 || line[len(line)-1] != '\n' {
		s.cur.b = append(s.cur.b, '\n')
	}
	s.cur.lines++
}

// take returns a free buffer, or counts the line dropped and returns nil.
func (s *Sender) take() *datagram {
	select {
	case d := <-s.free:
		return d
	default:
		s.c.QueueFull.Add(1)
		return nil
	}
}

// flushLocked queues the datagram being filled.
func (s *Sender) flushLocked() {
	if s.cur != nil && s.cur.lines > 0 {
		s.queue <- s.cur
		s.cur = nil
	}
}

// Flush queues a partly filled datagram now (Batch); the sender writes it
// soon after.
func (s *Sender) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.flushLocked()
	}
}

func (s *Sender) send() {
	defer s.wg.Done()
	for d := range s.queue {
		if _, err := s.conn.Write(d.b); err != nil {
			s.c.SendErrors.Add(d.lines)
			if s.erred.CompareAndSwap(false, true) {
				s.log.Warn("logtail send failed (further failures only counted)", "target", s.conn.RemoteAddr(), "err", err)
			}
		} else {
			s.c.Sent.Add(d.lines)
		}
		d.b, d.lines = d.b[:0], 0
		s.free <- d
	}
}

func (s *Sender) flusher(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.Flush()
		}
	}
}

// Close sends what is queued, stops the sender and closes the socket. It
// is idempotent.
func (s *Sender) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.flushLocked()
	close(s.queue)
	close(s.done)
	s.mu.Unlock()
	s.wg.Wait()
	return s.conn.Close()
}
