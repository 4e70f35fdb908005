package bindings

import (
	"slices"
)

// Link is one kernel network interface: its ifindex and current name.
type Link struct {
	Index uint32
	Name  string
}

// Result is the outcome of a lookup.
type Result struct {
	Tag    string // the binding's tag, or the default tag
	Device string // the link's name; "" if the ifindex is unknown (or 0)
	Bound  bool   // a binding matched; false means the default tag (a miss)
}

// BoundDevice tells which ifindex a configured binding resolved to.
type BoundDevice struct {
	Binding Binding
	Ifindex uint32 // 0 when !Present
	Present bool   // a link with Binding.Device exists
}

// denseLimit is the highest ifindex for which the table uses a slice indexed
// by ifindex; beyond it (hosts with heavy tunnel churn) it falls back to a map.
const denseLimit = 1 << 16

// Family slots of entry.res and of the miss counters.
const (
	slotOther = iota // FamilyAny or an invalid family: FamilyAny bindings only
	slotIPv4
	slotIPv6
	numSlots
)

func slotOf(fam Family) int {
	switch fam {
	case FamilyIPv4:
		return slotIPv4
	case FamilyIPv6:
		return slotIPv6
	}
	return slotOther
}

// entry is the precomputed answer for one ifindex, per family slot.
type entry struct {
	res [numSlots]Result
}

// Table is an immutable snapshot of the bindings resolved against the kernel's
// links. All methods are safe for concurrent use; Lookup neither locks nor
// allocates.
type Table struct {
	spec    Spec
	links   []Link   // sorted by Index
	entries []entry  // one per link, same order as links
	dense   []uint32 // ifindex → position in entries + 1 (0: unknown); nil if sparse
	sparse  map[uint32]uint32
	unknown Result
	bound   []BoundDevice
}

// NewTable resolves spec against links. It is pure: it neither reads nor
// changes any global state. Links with index 0 or an empty name are ignored;
// if several links claim the same index the last one wins; if several indexes
// carry the same name all are bound and Bound reports the highest. If spec holds
// duplicate (device, family) bindings (Spec.Validate rejects them) the first
// one wins. An empty Spec.DefaultTag means DefaultTag.
func NewTable(spec Spec, links []Link) *Table {
	t := &Table{spec: cloneSpec(spec)}
	def := t.spec.DefaultTag
	if def == "" {
		def = DefaultTag
	}
	t.unknown = Result{Tag: def}

	t.links = normalizeLinks(links)

	type key struct {
		dev string
		fam Family
	}
	tags := make(map[key]string, len(t.spec.Bindings))
	for _, b := range t.spec.Bindings {
		k := key{b.Device, b.Family}
		if _, dup := tags[k]; !dup {
			tags[k] = b.EffectiveTag()
		}
	}
	resolve := func(dev string, fam Family) Result {
		if fam != FamilyAny {
			if tag, ok := tags[key{dev, fam}]; ok {
				return Result{Tag: tag, Device: dev, Bound: true}
			}
		}
		if tag, ok := tags[key{dev, FamilyAny}]; ok {
			return Result{Tag: tag, Device: dev, Bound: true}
		}
		return Result{Tag: def, Device: dev}
	}

	t.entries = make([]entry, len(t.links))
	byName := make(map[string]uint32, len(t.links))
	var maxIndex uint32
	for i, l := range t.links {
		t.entries[i].res = [numSlots]Result{
			slotOther: resolve(l.Name, FamilyAny),
			slotIPv4:  resolve(l.Name, FamilyIPv4),
			slotIPv6:  resolve(l.Name, FamilyIPv6),
		}
		byName[l.Name] = l.Index // links are sorted: the highest index wins
		maxIndex = max(maxIndex, l.Index)
	}

	if maxIndex <= denseLimit {
		t.dense = make([]uint32, maxIndex+1)
		for i, l := range t.links {
			t.dense[l.Index] = uint32(i) + 1
		}
	} else {
		t.sparse = make(map[uint32]uint32, len(t.links))
		for i, l := range t.links {
			t.sparse[l.Index] = uint32(i) + 1
		}
	}

	t.bound = make([]BoundDevice, len(t.spec.Bindings))
	for i, b := range t.spec.Bindings {
		idx, ok := byName[b.Device]
		t.bound[i] = BoundDevice{Binding: b, Ifindex: idx, Present: ok}
	}
	return t
}

// normalizeLinks returns the valid links sorted by index, one per index.
func normalizeLinks(links []Link) []Link {
	out := make([]Link, 0, len(links))
	for _, l := range links {
		if l.Index != 0 && l.Name != "" {
			out = append(out, l)
		}
	}
	slices.SortStableFunc(out, func(a, b Link) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	// Keep the last of each run of equal indexes.
	n := 0
	for i, l := range out {
		if i+1 < len(out) && out[i+1].Index == l.Index {
			continue
		}
		out[n] = l
		n++
	}
	return slices.Clip(out[:n])
}

func cloneSpec(s Spec) Spec {
	return Spec{DefaultTag: s.DefaultTag, Bindings: slices.Clone(s.Bindings)}
}

// Lookup returns the tag of a connection accepted on ifindex with family fam:
// the binding of that device for exactly fam, else its FamilyAny binding, else
// the default tag with Bound false. Unknown ifindexes (and 0) give the default
// tag with an empty Device. Families other than IPv4 and IPv6 only match
// FamilyAny bindings. Lookup neither locks nor allocates.
func (t *Table) Lookup(ifindex uint32, fam Family) Result {
	if t == nil {
		return Result{Tag: DefaultTag}
	}
	var pos uint32
	if t.dense != nil {
		if ifindex < uint32(len(t.dense)) {
			pos = t.dense[ifindex]
		}
	} else {
		pos = t.sparse[ifindex]
	}
	if pos == 0 {
		return t.unknown
	}
	return t.entries[pos-1].res[slotOf(fam)]
}

// DefaultTag is the tag given to connections that match no binding.
func (t *Table) DefaultTag() string { return t.unknown.Tag }

// Spec returns (a copy of) the bindings this table was built from.
func (t *Table) Spec() Spec { return cloneSpec(t.spec) }

// Links returns (a copy of) all links the table knows, bound or not, sorted
// by index.
func (t *Table) Links() []Link { return slices.Clone(t.links) }

// Bound tells, for every configured binding in spec order, whether its device
// exists and which ifindex it resolved to. The result is a fresh copy.
func (t *Table) Bound() []BoundDevice { return slices.Clone(t.bound) }
