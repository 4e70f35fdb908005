package bindings

import (
	"testing"
)

func BenchmarkLookup(b *testing.B) {
	dense := NewResolver(canonicalSpec(), discardLogger())
	dense.SetLinks(canonicalLinks())
	sparse := NewResolver(canonicalSpec(), discardLogger())
	sparse.SetLinks(offsetLinks(canonicalLinks(), 1<<20))
	cases := []struct {
		name  string
		r     *Resolver
		index uint32
		fam   Family
	}{
		{"hit", dense, 3, FamilyIPv4},
		{"family-hit", dense, 4, FamilyIPv6},
		{"miss", dense, 2, FamilyIPv4},
		{"unknown", dense, 99, FamilyIPv6},
		{"sparse-hit", sparse, 3 + 1<<20, FamilyIPv4},
		{"sparse-miss", sparse, 2 + 1<<20, FamilyIPv4},
	}
	for _, c := range cases {
		b.Run("serial/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.r.Lookup(c.index, c.fam)
			}
		})
		b.Run("parallel/"+c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.r.Lookup(c.index, c.fam)
				}
			})
		})
	}
	b.Run("serial/table-only", func(b *testing.B) {
		tab := dense.Table()
		b.ReportAllocs()
		for b.Loop() {
			tab.Lookup(3, FamilyIPv4)
		}
	})
}
