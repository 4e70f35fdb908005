package nginxlog

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
)

// logtailSlot is the initial capacity of a logtail buffer; longer lines grow
// their buffer once.
const logtailSlot = 1024

// logtail forwards lines, enriched with source_tag and device, as UDP
// datagrams. send never blocks: buffers come from a fixed free list and a
// line is dropped (and counted) when none is free.
type logtail struct {
	conn    net.Conn
	free    chan []byte
	queue   chan []byte
	done    chan struct{}
	once    sync.Once
	log     *slog.Logger
	sent    atomic.Uint64
	dropped atomic.Uint64
	errors  atomic.Uint64
}

func newLogtail(target string, n int, log *slog.Logger) (*logtail, error) {
	conn, err := net.Dial("udp", target)
	if err != nil {
		return nil, fmt.Errorf("logtail target %s: %w", target, err)
	}
	t := &logtail{conn: conn, free: make(chan []byte, n), queue: make(chan []byte, n), done: make(chan struct{}), log: log}
	for range n {
		t.free <- make([]byte, 0, logtailSlot)
	}
	go t.run()
	return t, nil
}

// send queues `{"source_tag":"<tag>","device":"<device>",` + the rest of
// line after its opening brace. Tags and device names need no escaping.
func (t *logtail) send(line []byte, tag, device string) {
	var b []byte
	select {
	case b = <-t.free:
	default:
		t.dropped.Add(1)
		return
	}
	b = append(b[:0], `{"source_tag":"`...)
	b = append(b, tag...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `",`...)
	b = append(b, line[1:]...)
	t.queue <- b // never blocks: at most n buffers exist
}

func (t *logtail) run() {
	for {
		select {
		case <-t.done:
			return
		case b := <-t.queue:
			if _, err := t.conn.Write(b); err != nil {
				if t.errors.Add(1) == 1 {
					t.log.Warn("logtail send failed (further failures only counted)", "err", err)
				}
			} else {
				t.sent.Add(1)
			}
			t.free <- b
		}
	}
}

func (t *logtail) close() {
	t.once.Do(func() {
		close(t.done)
		t.conn.Close()
	})
}
