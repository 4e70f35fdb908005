package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/httpstats"
	"github.com/ipng/ipng-stats/logtail"
)

// Defaults of the access log.
const (
	defaultLogtailBuffer = 8 << 10 // bytes per datagram
	logtailQueue         = 64      // datagrams waiting for the sender
	fileFlushInterval    = time.Second
)

// accessLog writes one JSON line per request to a file or stdout and/or to
// a UDP logtail target (package logtail: batched datagrams, never blocking
// on the network; lines the sender cannot take are dropped and counted).
type accessLog struct {
	cfg config.ProxyAccessLogConfig

	mu     sync.Mutex
	file   io.WriteCloser // nil: no file
	w      *bufio.Writer
	tail   *logtail.Sender // nil: no logtail
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// newAccessLog opens the file and starts the logtail sender, which counts
// into tail (the Proxy's counters, kept across reloads).
func newAccessLog(cfg config.ProxyAccessLogConfig, tail *logtail.Counters, log *slog.Logger) (*accessLog, error) {
	a := &accessLog{cfg: cfg, done: make(chan struct{})}
	switch cfg.File {
	case "":
	case "-":
		a.file = nopCloser{os.Stdout}
	default:
		f, err := os.OpenFile(cfg.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("access log: %w", err)
		}
		a.file = f
	}
	if a.file != nil {
		a.w = bufio.NewWriterSize(a.file, 32<<10)
	}
	if t := cfg.Logtail.Target; t != "" {
		batch := cfg.Logtail.Buffer
		if batch <= 0 {
			batch = defaultLogtailBuffer
		}
		s, err := logtail.New(logtail.Options{Target: t, Queue: logtailQueue, Batch: batch,
			FlushInterval: cfg.Logtail.FlushInterval, Counters: tail, Logger: log})
		if err != nil {
			if a.file != nil {
				a.file.Close()
			}
			return nil, fmt.Errorf("access log: %w", err)
		}
		a.tail = s
	}
	if a.file != nil {
		a.wg.Add(1)
		go a.flusher()
	}
	return a, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func (a *accessLog) enabled() bool { return a != nil && (a.file != nil || a.tail != nil) }

// write logs e. It is called on the request's goroutine.
func (a *accessLog) write(e *httpstats.Entry) {
	var buf [512]byte
	a.emit(appendEntry(buf[:0], e))
}

// rawRequest is a request of the own loop, for the access log: slices of
// its head, valid during writeRaw.
type rawRequest struct{ method, host, uri, ua []byte }

// writeRaw is write for the own loop's requests (e.Request is nil).
func (a *accessLog) writeRaw(e *httpstats.Entry, r *rawRequest) {
	var buf [512]byte
	a.emit(appendEntryWith(buf[:0], e, r))
}

// emit writes one line to the file and the logtail target.
func (a *accessLog) emit(line []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if a.w != nil {
		a.w.Write(line)
	}
	if a.tail != nil {
		a.tail.Send(line)
	}
}

// flusher flushes the file's buffer every fileFlushInterval.
func (a *accessLog) flusher() {
	defer a.wg.Done()
	t := time.NewTicker(fileFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-a.done:
			return
		case <-t.C:
			a.mu.Lock()
			a.w.Flush()
			a.mu.Unlock()
		}
	}
}

// close flushes and closes; later writes are dropped silently.
func (a *accessLog) close() {
	if a == nil {
		return
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	close(a.done)
	if a.w != nil {
		a.w.Flush()
		a.file.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
	if a.tail != nil {
		a.tail.Close() // sends what is queued
	}
}

// appendEntry appends e as one JSON line.
func appendEntry(b []byte, e *httpstats.Entry) []byte { return appendEntryWith(b, e, nil) }

// appendEntryWith is appendEntry with the request from raw when e has none.
func appendEntryWith(b []byte, e *httpstats.Entry, raw *rawRequest) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","source_tag":`...)
	b = appendString(b, e.Info.Tag)
	b = append(b, `,"device":`...)
	b = appendString(b, e.Info.Device)
	b = append(b, `,"vip":"`...)
	b = e.Info.Local.Addr().Unmap().AppendTo(b)
	b = append(b, `","remote":"`...)
	b = e.Info.Remote.Addr().Unmap().AppendTo(b)
	b = append(b, '"')
	if r := e.Request; r != nil {
		b = append(b, `,"method":`...)
		b = appendString(b, r.Method)
		b = append(b, `,"host":`...)
		b = appendString(b, r.Host)
		b = append(b, `,"uri":`...)
		b = appendString(b, r.RequestURI)
		b = append(b, `,"proto":`...)
		b = appendString(b, r.Proto)
		b = append(b, `,"user_agent":`...)
		b = appendString(b, r.UserAgent())
	} else if r := raw; r != nil {
		b = append(b, `,"method":`...)
		b = appendString(b, bstr(r.method))
		b = append(b, `,"host":`...)
		b = appendString(b, bstr(r.host))
		b = append(b, `,"uri":`...)
		b = appendString(b, bstr(r.uri))
		b = append(b, `,"proto":"HTTP/1.1","user_agent":`...)
		b = appendString(b, bstr(r.ua))
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendUint(b, e.RequestBytes, 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendUint(b, e.ResponseBytes, 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendFloat(b, e.Duration.Seconds(), 'f', 6, 64)
	if e.Upstream != "" {
		b = append(b, `,"upstream":`...)
		b = appendString(b, e.Upstream)
	}
	return append(b, "}\n"...)
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
