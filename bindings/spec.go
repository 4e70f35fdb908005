// Package bindings maps an ingress interface and address family to a source
// tag. It owns the device → tag table and keeps it in step with the kernel's
// links (netlink events plus a periodic rescan). It does not know how an
// ifindex was learned (package attribution) nor what is counted per tag
// (package collector).
package bindings

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/ipng/ipng-stats/family"
)

// Family is the IP version of a connection (package family, below both
// bindings and loader). IPv4 connections accepted on a dual-stack IPv6
// socket (v4-mapped addresses) are FamilyIPv4.
type Family = family.Family

const (
	// FamilyAny in a Binding means "both families".
	FamilyAny  = family.Any
	FamilyIPv4 = family.IPv4
	FamilyIPv6 = family.IPv6
)

// ParseFamily accepts "", "any", "ipv4" and "ipv6".
func ParseFamily(s string) (Family, error) { return family.Parse(s) }

// DefaultTag is the tag of connections whose interface has no binding.
const DefaultTag = "direct"

// Binding ties a device name (and optionally one family) to a tag.
type Binding struct {
	Device string
	Family Family // FamilyAny: the binding covers both families
	Tag    string // empty: the device name is the tag
}

// EffectiveTag is the tag this binding assigns.
func (b Binding) EffectiveTag() string {
	if b.Tag == "" {
		return b.Device
	}
	return b.Tag
}

// Spec is the configured bindings table.
type Spec struct {
	DefaultTag string
	Bindings   []Binding
}

var tagRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$`)

// ValidateTag reports whether s can be used as a source tag: 1 to 63
// characters, letters, digits and "_.:-", starting with a letter or digit.
func ValidateTag(s string) error {
	if !tagRE.MatchString(s) {
		return fmt.Errorf("invalid tag %q: want 1-63 characters of [A-Za-z0-9_.:-], starting with a letter or digit", s)
	}
	return nil
}

// ValidateDevice reports whether s is a valid Linux interface name.
func ValidateDevice(s string) error {
	if s == "" {
		return errors.New("empty device name")
	}
	if len(s) > 15 {
		return fmt.Errorf("invalid device %q: longer than 15 characters (IFNAMSIZ)", s)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("invalid device %q", s)
	}
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("invalid device %q: contains %q", s, r)
		}
	}
	return nil
}

// Validate checks every binding and rejects duplicate (device, family) pairs.
func (s Spec) Validate() error {
	var errs []error
	if err := ValidateTag(s.DefaultTag); err != nil {
		errs = append(errs, fmt.Errorf("default tag: %w", err))
	}
	type key struct {
		dev string
		fam Family
	}
	seen := make(map[key]int, len(s.Bindings))
	for i, b := range s.Bindings {
		if err := ValidateDevice(b.Device); err != nil {
			errs = append(errs, fmt.Errorf("binding %d: %w", i+1, err))
			continue
		}
		if b.Family != FamilyAny && b.Family != FamilyIPv4 && b.Family != FamilyIPv6 {
			errs = append(errs, fmt.Errorf("binding %d (%s): invalid family %s", i+1, b.Device, b.Family))
		}
		if err := ValidateTag(b.EffectiveTag()); err != nil {
			errs = append(errs, fmt.Errorf("binding %d (%s): %w", i+1, b.Device, err))
		}
		k := key{b.Device, b.Family}
		if prev, ok := seen[k]; ok {
			errs = append(errs, fmt.Errorf("binding %d: device %q family %s already bound by binding %d", i+1, b.Device, b.Family, prev))
			continue
		}
		seen[k] = i + 1
	}
	return errors.Join(errs...)
}
