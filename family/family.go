// Package family defines the IP version of a connection, the one type the
// BPF ABI (package loader), the bindings (package bindings) and everything
// above them share. It depends on nothing of this module, so that the
// lower layers need not import the policy above them.
package family

import "fmt"

// Family is the IP version of a connection. IPv4 connections accepted on a
// dual-stack IPv6 socket (v4-mapped addresses) are IPv4. Its values are the
// ones the sock_ops program stores (4 and 6).
type Family uint8

const (
	// Any in a binding means "both families".
	Any  Family = 0
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case Any:
		return "any"
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// Parse accepts "", "any", "ipv4" and "ipv6".
func Parse(s string) (Family, error) {
	switch s {
	case "", "any":
		return Any, nil
	case "ipv4":
		return IPv4, nil
	case "ipv6":
		return IPv6, nil
	}
	return 0, fmt.Errorf("unknown family %q (want ipv4, ipv6 or any)", s)
}
