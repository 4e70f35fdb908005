package bindings

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultRescan is the full-rescan interval Run uses when given 0.
const DefaultRescan = 60 * time.Second

// paddedCounter keeps each miss counter on its own cache line so that
// concurrent IPv4 and IPv6 misses do not contend.
type paddedCounter struct {
	atomic.Uint64
	_ [56]byte
}

// Resolver holds the live Table and the miss counters. Lookup is lock-free
// and allocation-free; every change (links, spec) builds a new Table and
// publishes it atomically.
type Resolver struct {
	misses [numSlots]paddedCounter
	table  atomic.Pointer[Table]

	logger *slog.Logger
	// The kernel side, replaced by fakes in tests: listLinks and
	// subscribeLinks by default.
	list      func() ([]Link, error)
	subscribe func(*slog.Logger) (*linkSub, error)

	mu    sync.Mutex // serializes writers; never taken by Lookup
	spec  Spec
	links map[uint32]string
	run   *runState // non-nil while Run is active
	// onChange is called with every new table (OnChange).
	onChange func(*Table)
	// changed is closed, and replaced, by every new table (Changed).
	changed chan struct{}
	// announced is set by the first rebuild, which logs every binding
	// (bound or absent) instead of only the changes.
	announced bool
}

// runState lets Scan hand its work to an active Run, which lists links in its
// own namespace and orders the result correctly against link events.
type runState struct {
	scans chan chan error
	done  chan struct{} // closed when Run returns
}

// NewResolver returns a Resolver for spec. It knows no links (every lookup
// misses) until Scan, SetLinks or Run provides them. A nil logger means
// slog.Default().
func NewResolver(spec Spec, logger *slog.Logger) *Resolver {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Resolver{
		logger:    logger.With("component", "bindings"),
		list:      listLinks,
		subscribe: subscribeLinks,
		spec:      cloneSpec(spec),
		links:     map[uint32]string{},
		changed:   make(chan struct{}),
	}
	r.table.Store(NewTable(r.spec, nil))
	return r
}

// Lookup is Table().Lookup that also counts misses (results with Bound
// false) per family. It neither locks nor allocates. Misses for families
// other than IPv4 and IPv6 are not reported by Misses.
func (r *Resolver) Lookup(ifindex uint32, fam Family) Result {
	res := r.table.Load().Lookup(ifindex, fam)
	if !res.Bound {
		r.misses[slotOf(fam)].Add(1)
	}
	return res
}

// CountMisses adds n misses of family fam, for lookups made elsewhere (the
// sock_ops program reads the table through its own map).
func (r *Resolver) CountMisses(fam Family, n uint64) {
	r.misses[slotOf(fam)].Add(n)
}

// OnChange calls fn with the current table, then with every new table, in
// order, under the writers' lock: fn must not call SetSpec, SetLinks or Scan.
// A later call replaces fn; nil removes it.
func (r *Resolver) OnChange(fn func(*Table)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onChange = fn
	if fn != nil {
		fn(r.table.Load())
	}
}

// Changed returns a channel that is closed when the table is next
// replaced (a link event, a rescan, SetSpec, SetLinks), so that a follower
// waits for changes instead of polling Table. Call it before Table: a
// replacement in between closes the returned channel, so no table is
// missed.
func (r *Resolver) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Misses returns how many lookups fell back to the default tag, per family.
func (r *Resolver) Misses() (v4, v6 uint64) {
	return r.misses[slotIPv4].Load(), r.misses[slotIPv6].Load()
}

// Table returns the current snapshot.
func (r *Resolver) Table() *Table { return r.table.Load() }

// SetSpec replaces the bindings (configuration reload) and rebuilds the table
// with the current links. Counters are kept.
func (r *Resolver) SetSpec(spec Spec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spec = cloneSpec(spec)
	r.rebuildLocked()
}

// SetLinks replaces the known links and rebuilds the table. While Run is
// active its events and rescans overwrite what SetLinks set.
func (r *Resolver) SetLinks(links []Link) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.links = make(map[uint32]string, len(links))
	for _, l := range links {
		if l.Index != 0 && l.Name != "" {
			r.links[l.Index] = l.Name
		}
	}
	r.rebuildLocked()
}

// linkChange is one RTM_NEWLINK (Name != "") or RTM_DELLINK (Name == "").
type linkChange struct {
	Index uint32
	Name  string
}

// applyChanges applies link events in order and rebuilds the table if any
// of them changed an (index, name) pair. It reports whether it rebuilt.
func (r *Resolver) applyChanges(changes []linkChange) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for _, c := range changes {
		if c.Index == 0 {
			continue
		}
		old, had := r.links[c.Index]
		switch {
		case c.Name == "" && had:
			delete(r.links, c.Index)
			changed = true
		case c.Name != "" && (!had || old != c.Name):
			r.links[c.Index] = c.Name
			changed = true
		}
	}
	if changed {
		r.rebuildLocked()
	}
	return changed
}

func (r *Resolver) rebuildLocked() {
	links := make([]Link, 0, len(r.links))
	for idx, name := range r.links {
		links = append(links, Link{Index: idx, Name: name})
	}
	next := NewTable(r.spec, links)
	prev := r.table.Swap(next)
	close(r.changed)
	r.changed = make(chan struct{})
	if r.onChange != nil {
		r.onChange(next)
	}
	if !r.announced {
		r.announced = true
		prev = &Table{}
	}
	r.logChanges(prev, next)
}

// logChanges logs every binding whose resolution changed between two tables.
func (r *Resolver) logChanges(prev, next *Table) {
	type key struct {
		dev string
		fam Family
	}
	before := make(map[key]BoundDevice, len(prev.bound))
	for _, bd := range prev.bound {
		k := key{bd.Binding.Device, bd.Binding.Family}
		if _, dup := before[k]; !dup {
			before[k] = bd
		}
	}
	seen := make(map[key]bool, len(next.bound))
	for _, bd := range next.bound {
		k := key{bd.Binding.Device, bd.Binding.Family}
		if seen[k] {
			continue
		}
		seen[k] = true
		old, existed := before[k]
		b := bd.Binding
		switch {
		case bd.Present && (!old.Present || old.Ifindex != bd.Ifindex ||
			old.Binding.EffectiveTag() != b.EffectiveTag()):
			r.logger.Info("device bound", "device", b.Device, "family", b.Family.String(),
				"ifindex", bd.Ifindex, "tag", b.EffectiveTag())
		case !bd.Present && old.Present:
			r.logger.Info("device gone", "device", b.Device, "family", b.Family.String(),
				"ifindex", old.Ifindex, "tag", b.EffectiveTag())
		case !bd.Present && !existed:
			r.logger.Info("device absent", "device", b.Device, "family", b.Family.String(),
				"tag", b.EffectiveTag())
		}
	}
	for _, old := range prev.bound { // in spec order, for stable logs
		k := key{old.Binding.Device, old.Binding.Family}
		if !seen[k] && old.Present {
			seen[k] = true
			r.logger.Info("device unbound", "device", old.Binding.Device,
				"family", old.Binding.Family.String(), "ifindex", old.Ifindex,
				"tag", old.Binding.EffectiveTag())
		}
	}
}
