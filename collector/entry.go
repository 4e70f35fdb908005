package collector

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// OverflowVIP is the vip label of the series that new (source_tag, vip)
// pairs fold into once the series cap is reached.
const OverflowVIP = "other"

// OverflowTag is the source_tag label of the catch-all overflow series used
// when even the number of per-tag overflow series is exhausted.
const OverflowTag = "other"

// maxOverflowTags bounds the number of (tag, "other") series.
const maxOverflowTags = 256

// entry is one (source_tag, vip) series and its shards.
type entry struct {
	tag      string
	vip      string     // canonical address, or OverflowVIP
	addr     netip.Addr // zero for an overflow series
	shards   []shard
	next     atomic.Uint32 // round-robin shard choice
	conns    atomic.Bool   // a source reported connections
	inFlight atomic.Bool   // a source reported reading/writing requests
	hs       atomic.Bool   // a source reported handshake stages
	native   *nativeSet    // nil unless native histograms are enabled
	rate     rate
}

func newEntry(l *layout, cfg Config, tag string, addr netip.Addr) *entry {
	e := &entry{tag: tag, addr: addr, vip: OverflowVIP}
	if addr.IsValid() {
		e.vip = addr.String()
	}
	words := make([]atomic.Uint64, cfg.Shards*l.stride)
	e.shards = make([]shard, cfg.Shards)
	for i := range e.shards {
		e.shards[i] = shard{lay: l, e: e, w: words[i*l.stride : i*l.stride+l.words : i*l.stride+l.words]}
	}
	if l.native {
		e.native = newNativeSet(cfg)
	}
	return e
}

// handle returns a Series on the next shard, round-robin.
func (e *entry) handle() Series {
	i := e.next.Add(1) - 1
	return Series{sh: &e.shards[i%uint32(len(e.shards))]}
}

func (e *entry) markConns() {
	if !e.conns.Load() {
		e.conns.Store(true)
	}
}

func (e *entry) markHandshakes() {
	if !e.hs.Load() {
		e.hs.Store(true)
	}
}

func (e *entry) markInFlight() {
	if !e.inFlight.Load() {
		e.inFlight.Store(true)
	}
}

// requests is the total number of recorded requests over all shards.
func (e *entry) requests() uint64 {
	var n uint64
	for i := range e.shards {
		sh := &e.shards[i]
		for j := sh.lay.offSizes; j < sh.lay.offSums; j++ {
			n += sh.w[j].Load()
		}
	}
	return n
}

// seriesKey identifies a series; an invalid addr means the tag's overflow series.
type seriesKey struct {
	tag  string
	addr netip.Addr
}

// index is a map of series striped over a few RWMutexes, so that resolving
// handles on several cores rarely touches the same lock word. It is used
// once per connection, never per request.
type index struct {
	stripes [16]struct {
		mu sync.RWMutex
		m  map[seriesKey]*entry
		_  [32]byte // keep stripes on separate cache lines
	}
}

func newIndex() *index {
	ix := &index{}
	for i := range ix.stripes {
		ix.stripes[i].m = make(map[seriesKey]*entry)
	}
	return ix
}

func stripeOf(k seriesKey) int {
	b := k.addr.As16()
	h := uint64(len(k.tag))
	for _, x := range b[8:] {
		h = h*31 + uint64(x)
	}
	h ^= h >> 17
	return int(h % 16)
}

func (ix *index) load(k seriesKey) (*entry, bool) {
	s := &ix.stripes[stripeOf(k)]
	s.mu.RLock()
	e, ok := s.m[k]
	s.mu.RUnlock()
	return e, ok
}

// loadOrCreate returns the entry of k, calling create under the stripe's
// write lock if it is missing. create may return nil to decline.
func (ix *index) loadOrCreate(k seriesKey, create func() *entry) *entry {
	s := &ix.stripes[stripeOf(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[k]; ok {
		return e
	}
	e := create()
	if e != nil {
		s.m[k] = e
	}
	return e
}
