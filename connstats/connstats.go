// Package connstats turns the sock_ops program's open/close events into
// per (source tag, VIP) connection counts in the collector, so that the agent
// counts connections of every server on the host, including servers that
// report nothing themselves. It remembers the series each open connection
// was counted in, so that its close decrements the same series even when the
// bindings changed in between. It does not read the ring buffer (package
// loader) nor decide tags (package bindings).
package connstats

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/loader"
)

// Tracker counts connections. Its methods are safe for concurrent use.
type Tracker struct {
	col   *collector.Collector
	tags  *bindings.Resolver
	netns uint64 // connections of other network namespaces are not ours to tag

	mu   sync.Mutex
	open map[uint64]conn // by socket cookie

	otherNetns atomic.Uint64
}

// conn is an open connection: the series it was counted in, and when it was
// stamped (CLOCK_MONOTONIC), which Reconcile compares with its snapshot.
type conn struct {
	series    collector.Series
	stampedAt time.Duration
}

// New returns a Tracker for connections of the network namespace whose
// cookie is netns (loader.NetnsCookie).
func New(col *collector.Collector, tags *bindings.Resolver, netns uint64) *Tracker {
	return &Tracker{col: col, tags: tags, netns: netns, open: make(map[uint64]conn)}
}

// Handle counts one event.
func (t *Tracker) Handle(ev loader.Event) {
	if ev.Stamp.NetnsCookie != t.netns {
		if ev.Open {
			t.otherNetns.Add(1)
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if ev.Open {
		t.opened(ev.Stamp)
		return
	}
	if c, ok := t.open[ev.Stamp.Cookie]; ok {
		delete(t.open, ev.Stamp.Cookie)
		c.series.ConnClosed()
	}
}

func (t *Tracker) opened(st loader.Stamp) {
	if _, ok := t.open[st.Cookie]; ok {
		return // already counted (Seed, then the event)
	}
	r := t.tags.Lookup(st.Ifindex, st.Family)
	s := t.col.Series(r.Tag, st.Local.Addr())
	s.ConnOpened()
	t.open[st.Cookie] = conn{series: s, stampedAt: st.StampedAt}
}

// Seed counts connections that were open before the tracker started (the
// agent took over pinned maps). It takes loader.Maps.LiveStamps.
func (t *Tracker) Seed(live []loader.Stamp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range live {
		if st.NetnsCookie == t.netns {
			t.opened(st)
		}
	}
}

// Reconcile forgets connections that are no longer open because their close
// event was lost, closing them in their series. live is a listing of
// loader.Maps.LiveStamps that started at CLOCK_MONOTONIC time before:
// connections stamped after that may be missing from it without being
// closed, so only older ones are considered.
func (t *Tracker) Reconcile(live []loader.Stamp, before time.Duration) (closed int) {
	alive := make(map[uint64]struct{}, len(live))
	for _, st := range live {
		alive[st.Cookie] = struct{}{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for cookie, c := range t.open {
		if _, ok := alive[cookie]; !ok && c.stampedAt < before {
			delete(t.open, cookie)
			c.series.ConnClosed()
			closed++
		}
	}
	return closed
}

// Open is the number of connections currently counted as open.
func (t *Tracker) Open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// OtherNetns is the number of connections seen in other network namespaces
// (not counted).
func (t *Tracker) OtherNetns() uint64 { return t.otherNetns.Load() }
