package bindings

import (
	"reflect"
	"testing"
)

// canonicalSpec is the example from the nginx module: eth1 for both
// families, eth2 per family, everything else direct.
func canonicalSpec() Spec {
	return Spec{
		DefaultTag: "direct",
		Bindings: []Binding{
			{Device: "eth1", Tag: "tag1"},
			{Device: "eth2", Family: FamilyIPv4, Tag: "tag2-v4"},
			{Device: "eth2", Family: FamilyIPv6, Tag: "tag2-v6"},
		},
	}
}

func canonicalLinks() []Link {
	return []Link{{1, "lo"}, {2, "eth0"}, {3, "eth1"}, {4, "eth2"}, {5, "eth3"}}
}

// offsetLinks shifts every index so that the table takes its sparse (map)
// path.
func offsetLinks(links []Link, off uint32) []Link {
	out := make([]Link, len(links))
	for i, l := range links {
		out[i] = Link{Index: l.Index + off, Name: l.Name}
	}
	return out
}

func TestTableLookup(t *testing.T) {
	spec := Spec{
		DefaultTag: "direct",
		Bindings: []Binding{
			{Device: "eth1", Tag: "tag1"},                        // any
			{Device: "eth2", Family: FamilyIPv4, Tag: "tag2-v4"}, // per family
			{Device: "eth2", Family: FamilyIPv6, Tag: "tag2-v6"}, // per family
			{Device: "tun0"},                                      // tag = device
			{Device: "tun1", Family: FamilyIPv6},                  // v6 only, tag = device
			{Device: "gre1", Tag: "gre-any"},                      // any ...
			{Device: "gre1", Family: FamilyIPv4, Tag: "gre-v4"},   // ... overridden for v4
			{Device: "absent0", Tag: "nope"},                      // no such link
			{Device: "eth1", Family: FamilyAny, Tag: "duplicate"}, // first wins
		},
	}
	links := []Link{
		{1, "lo"}, {2, "eth0"}, {3, "eth1"}, {4, "eth2"},
		{10, "tun0"}, {11, "tun1"}, {12, "gre1"},
	}
	tests := []struct {
		name  string
		index uint32
		fam   Family
		want  Result
	}{
		{"any binding v4", 3, FamilyIPv4, Result{"tag1", "eth1", true}},
		{"any binding v6", 3, FamilyIPv6, Result{"tag1", "eth1", true}},
		{"family binding v4", 4, FamilyIPv4, Result{"tag2-v4", "eth2", true}},
		{"family binding v6", 4, FamilyIPv6, Result{"tag2-v6", "eth2", true}},
		{"tag defaults to device v4", 10, FamilyIPv4, Result{"tun0", "tun0", true}},
		{"tag defaults to device v6", 10, FamilyIPv6, Result{"tun0", "tun0", true}},
		{"v6-only binding, v6", 11, FamilyIPv6, Result{"tun1", "tun1", true}},
		{"v6-only binding, v4 misses", 11, FamilyIPv4, Result{"direct", "tun1", false}},
		{"family beats any, v4", 12, FamilyIPv4, Result{"gre-v4", "gre1", true}},
		{"any when no family binding, v6", 12, FamilyIPv6, Result{"gre-any", "gre1", true}},
		{"unbound device v4", 2, FamilyIPv4, Result{"direct", "eth0", false}},
		{"unbound device v6", 1, FamilyIPv6, Result{"direct", "lo", false}},
		{"unknown ifindex", 99, FamilyIPv4, Result{"direct", "", false}},
		{"unknown ifindex beyond dense", denseLimit + 5, FamilyIPv6, Result{"direct", "", false}},
		{"ifindex 0 v4", 0, FamilyIPv4, Result{"direct", "", false}},
		{"ifindex 0 v6", 0, FamilyIPv6, Result{"direct", "", false}},
		{"FamilyAny uses any binding", 3, FamilyAny, Result{"tag1", "eth1", true}},
		{"FamilyAny ignores family bindings", 4, FamilyAny, Result{"direct", "eth2", false}},
		{"invalid family uses any binding", 12, Family(9), Result{"gre-any", "gre1", true}},
	}
	for _, layout := range []struct {
		name string
		off  uint32
	}{{"dense", 0}, {"sparse", 1 << 20}} {
		tab := NewTable(spec, offsetLinks(links, layout.off))
		if got := tab.sparse != nil; got != (layout.off != 0) {
			t.Fatalf("%s: sparse layout = %v", layout.name, got)
		}
		for _, tt := range tests {
			t.Run(layout.name+"/"+tt.name, func(t *testing.T) {
				idx := tt.index
				if idx >= 1 && idx < 100 {
					idx += layout.off
				}
				if got := tab.Lookup(idx, tt.fam); got != tt.want {
					t.Errorf("Lookup(%d, %s) = %+v, want %+v", idx, tt.fam, got, tt.want)
				}
			})
		}
	}
}

func TestTableDefaultTag(t *testing.T) {
	tests := []struct {
		name string
		def  string
		want string
	}{
		{"explicit", "other", "other"},
		{"empty means direct", "", DefaultTag},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(Spec{DefaultTag: tt.def}, []Link{{2, "eth0"}})
			if got := tab.Lookup(2, FamilyIPv4); got != (Result{tt.want, "eth0", false}) {
				t.Errorf("known link: got %+v", got)
			}
			if got := tab.Lookup(7, FamilyIPv6); got != (Result{tt.want, "", false}) {
				t.Errorf("unknown link: got %+v", got)
			}
			if got := tab.DefaultTag(); got != tt.want {
				t.Errorf("DefaultTag() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTableBound(t *testing.T) {
	spec := Spec{DefaultTag: "direct", Bindings: []Binding{
		{Device: "eth1", Tag: "tag1"},
		{Device: "eth2", Family: FamilyIPv4, Tag: "tag2-v4"},
		{Device: "eth2", Family: FamilyIPv6, Tag: "tag2-v6"},
		{Device: "tun9"},
	}}
	tests := []struct {
		name  string
		links []Link
		want  []BoundDevice
	}{
		{
			name:  "no links",
			links: nil,
			want: []BoundDevice{
				{Binding: spec.Bindings[0]}, {Binding: spec.Bindings[1]},
				{Binding: spec.Bindings[2]}, {Binding: spec.Bindings[3]},
			},
		},
		{
			name:  "some present",
			links: canonicalLinks(),
			want: []BoundDevice{
				{spec.Bindings[0], 3, true}, {spec.Bindings[1], 4, true},
				{spec.Bindings[2], 4, true}, {Binding: spec.Bindings[3]},
			},
		},
		{
			name:  "duplicate name: highest index reported",
			links: []Link{{40, "tun9"}, {30, "tun9"}},
			want: []BoundDevice{
				{Binding: spec.Bindings[0]}, {Binding: spec.Bindings[1]},
				{Binding: spec.Bindings[2]}, {spec.Bindings[3], 40, true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(spec, tt.links)
			got := tab.Bound()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Bound() = %+v, want %+v", got, tt.want)
			}
			got[0].Ifindex = 12345 // a copy: must not affect the table
			if tab.Bound()[0].Ifindex == 12345 {
				t.Error("Bound() returned the table's own slice")
			}
		})
	}
}

func TestNewTableLinks(t *testing.T) {
	tests := []struct {
		name  string
		links []Link
		want  []Link
	}{
		{"nil", nil, []Link{}},
		{"sorted", []Link{{5, "b"}, {1, "lo"}, {3, "a"}}, []Link{{1, "lo"}, {3, "a"}, {5, "b"}}},
		{"drops index 0 and empty names", []Link{{0, "x"}, {2, ""}, {4, "y"}}, []Link{{4, "y"}}},
		{"last of a duplicate index wins", []Link{{7, "old"}, {2, "z"}, {7, "new"}}, []Link{{2, "z"}, {7, "new"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(Spec{}, tt.links)
			if got := tab.Links(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Links() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestNewTableDoesNotAliasInputs(t *testing.T) {
	spec := canonicalSpec()
	links := canonicalLinks()
	tab := NewTable(spec, links)
	spec.Bindings[0].Tag = "mutated"
	links[2].Name = "mutated"
	if got := tab.Lookup(3, FamilyIPv4); got != (Result{"tag1", "eth1", true}) {
		t.Errorf("after mutating inputs: got %+v", got)
	}
	if got := tab.Spec().Bindings[0].Tag; got != "tag1" {
		t.Errorf("Spec() aliased the input: tag %q", got)
	}
}

func TestNilTable(t *testing.T) {
	var tab *Table
	if got := tab.Lookup(3, FamilyIPv4); got != (Result{Tag: DefaultTag}) {
		t.Errorf("nil table Lookup = %+v", got)
	}
}
