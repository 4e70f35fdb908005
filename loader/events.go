package loader

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// Event is a socket opening (accepted and stamped) or closing.
type Event struct {
	Open  bool
	Stamp Stamp
}

// ReadEvents calls fn for every event of the program's ring buffer until ctx
// is done. Events the ring buffer could not hold are counted by the program
// (counter event_lost), not here.
func (p *Program) ReadEvents(ctx context.Context, fn func(Event)) error {
	rd, err := ringbuf.NewReader(p.objs.IpngEvents)
	if err != nil {
		return fmt.Errorf("opening event ring buffer: %w", err)
	}
	defer rd.Close()
	var rec ringbuf.Record
	for ctx.Err() == nil {
		rd.SetDeadline(time.Now().Add(200 * time.Millisecond))
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading event ring buffer: %w", err)
		}
		ev, err := decodeEvent(rec.RawSample)
		if err != nil {
			// A record of another layout (a pinned ring buffer kept across
			// an upgrade): skip it, count it.
			p.malformed.Add(1)
			continue
		}
		fn(ev)
	}
	return nil
}

// MalformedEvents is the number of ring-buffer records ReadEvents skipped
// because they were not events of this version.
func (p *Program) MalformedEvents() uint64 { return p.malformed.Load() }

func decodeEvent(b []byte) (Event, error) {
	var raw ipngbpf.SockopsIpngEvent
	if len(b) < int(unsafe.Sizeof(raw)) {
		return Event{}, fmt.Errorf("short event: %d bytes, want %d", len(b), unsafe.Sizeof(raw))
	}
	raw = *(*ipngbpf.SockopsIpngEvent)(unsafe.Pointer(&b[0]))
	return Event{Open: raw.Type == ipngbpf.SockopsIpngEventTypeIPNG_EVENT_OPEN, Stamp: DecodeStamp(&raw.Stamp)}, nil
}
