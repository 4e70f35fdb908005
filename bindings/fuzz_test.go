package bindings

import (
	"strings"
	"testing"
)

// parseSpecText reads the fuzzer's compact spec: the first line is the
// default tag, each further line "device family tag" (family and tag may
// be missing). It returns false when a family does not parse, as the
// config does.
func parseSpecText(text string) (Spec, bool) {
	lines := strings.Split(text, "\n")
	spec := Spec{DefaultTag: lines[0]}
	for _, l := range lines[1:] {
		f := strings.SplitN(l, " ", 3)
		for len(f) < 3 {
			f = append(f, "")
		}
		fam, err := ParseFamily(f[1])
		if err != nil {
			if err.Error() == "" {
				panic("ParseFamily: empty error")
			}
			return Spec{}, false
		}
		spec.Bindings = append(spec.Bindings, Binding{Device: f[0], Family: fam, Tag: f[2]})
	}
	return spec, true
}

// FuzzSpec checks the bindings spec: Validate never panics and explains
// every refusal; an accepted spec only yields valid tags, and NewTable
// resolves it exactly as an independent reading of the rules does (a
// family-specific binding beats "any", unbound devices get the default).
func FuzzSpec(f *testing.F) {
	for _, s := range []string{
		"direct",
		"direct\neth0",
		"direct\ngre1 ipv4 maglev1\ngre1 ipv6 maglev1-v6\neth0 any uplink",
		"x\neth0 ipv4 a\neth0 ipv4 b",
		"\neth0",
		"direct\n../x",
		"direct\neth0:1",
		"direct\nverylongdevicename0",
		"direct\neth0 ipv5",
		"direct\nbond0  \nbond0 ipv6 Bond.Six:1",
		"-bad\neth0 any -tag",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		spec, ok := parseSpecText(text)
		if !ok {
			return
		}
		if err := spec.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatalf("Validate(%+v) failed without a message", spec)
			}
			return
		}
		if err := ValidateTag(spec.DefaultTag); err != nil {
			t.Fatalf("accepted default tag %q: %v", spec.DefaultTag, err)
		}
		links := make([]Link, 0, len(spec.Bindings))
		index := map[string]uint32{}
		for _, b := range spec.Bindings {
			if err := ValidateTag(b.EffectiveTag()); err != nil {
				t.Fatalf("accepted binding %+v: %v", b, err)
			}
			if _, ok := index[b.Device]; !ok {
				index[b.Device] = uint32(len(links) + 1)
				links = append(links, Link{Index: uint32(len(links) + 1), Name: b.Device})
			}
		}
		table := NewTable(spec, links)
		for dev, ifindex := range index {
			for _, fam := range []Family{FamilyIPv4, FamilyIPv6} {
				want := Result{Tag: spec.DefaultTag, Device: dev}
				for _, b := range spec.Bindings {
					if b.Device == dev && b.Family == FamilyAny {
						want = Result{Tag: b.EffectiveTag(), Device: dev, Bound: true}
					}
				}
				for _, b := range spec.Bindings {
					if b.Device == dev && b.Family == fam {
						want = Result{Tag: b.EffectiveTag(), Device: dev, Bound: true}
					}
				}
				if got := table.Lookup(ifindex, fam); got != want {
					t.Fatalf("Lookup(%d %s, %s) = %+v, want %+v", ifindex, dev, fam, got, want)
				}
			}
		}
		if got := table.Lookup(uint32(len(links)+1), FamilyIPv4); got != (Result{Tag: spec.DefaultTag}) {
			t.Fatalf("Lookup of an unknown ifindex = %+v, want the default tag %q", got, spec.DefaultTag)
		}
	})
}
