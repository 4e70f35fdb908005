// Package connstats turns the sock_ops program's in-kernel connection counts
// into per (source tag, VIP) connection series of the collector, so that the
// agent counts connections of every server on the host, including servers
// that report nothing themselves. The program counts connections opened and
// closed per (tag id, VIP) on each CPU; Sync reads them (the agent calls it
// at every snapshot of the collector) and adds what changed since the last
// read. Nothing is sent
// to user space per connection. It does not load the program (package
// loader) nor decide tags (package bindings, through the program's map).
package connstats

import (
	"sync"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/loader"
)

// Tracker adds the program's connection counts to the collector. Its
// methods are safe for concurrent use.
type Tracker struct {
	col   *collector.Collector
	tags  *bindings.Resolver
	names func(id uint32) (string, bool)
	read  func() ([]loader.ConnCount, error)

	mu   sync.Mutex
	seen map[loader.ConnKey]*counted
}

// counted is one kernel series: the collector series it is added to (fixed
// at first sight, so that opens and closes land in the same series) and
// what was added so far.
type counted struct {
	series         collector.Series
	folded         bool // series is an overflow series: each connection counts a fold
	bound          bool
	fam            bindings.Family
	opened, closed uint64
}

// New returns a Tracker that reads counts with read (loader.Maps.ReadConns),
// names tag ids with names (loader.TagTable.Name) and resolves counts of
// tag id 0 (interfaces the program did not know) with tags.
func New(col *collector.Collector, tags *bindings.Resolver, names func(uint32) (string, bool),
	read func() ([]loader.ConnCount, error)) *Tracker {
	return &Tracker{col: col, tags: tags, names: names, read: read, seen: map[loader.ConnKey]*counted{}}
}

// Sync reads the kernel counts and adds what changed since the last Sync.
// The first Sync adds everything the pinned map holds: connections counted
// while no agent ran are counted too, and the active gauges start right.
func (t *Tracker) Sync() error {
	counts, err := t.read()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range counts {
		e, ok := t.seen[c.Key]
		if !ok {
			e = t.newCounted(c.Key)
			t.seen[c.Key] = e
		}
		// Counts only grow while the map exists; a smaller value would
		// mean another map, and is taken as the new base.
		opened, closed := sub(c.Opened, e.opened), sub(c.Closed, e.closed)
		e.series.AddConns(opened, closed)
		if e.folded {
			t.col.CountFolds(opened)
		}
		if !e.bound && opened > 0 {
			t.tags.CountMisses(e.fam, opened)
		}
		e.opened, e.closed = c.Opened, c.Closed
	}
	return err
}

func sub(now, before uint64) uint64 {
	if now < before {
		return 0
	}
	return now - before
}

func (t *Tracker) newCounted(k loader.ConnKey) *counted {
	tag, bound := "", k.Bound
	if k.TagID != 0 {
		tag, _ = t.names(k.TagID)
	}
	if tag == "" {
		// Not known at accept: the interface's tag now.
		r := t.tags.Table().Lookup(k.Ifindex, k.Family)
		tag, bound = r.Tag, r.Bound
	}
	s, folded := t.col.SeriesFolded(tag, k.VIP)
	return &counted{series: s, folded: folded, bound: bound, fam: k.Family}
}
