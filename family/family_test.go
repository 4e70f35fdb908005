package family

import "testing"

func TestParseAndString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Family
		name string
	}{{"", Any, "any"}, {"any", Any, "any"}, {"ipv4", IPv4, "ipv4"}, {"ipv6", IPv6, "ipv6"}} {
		f, err := Parse(tc.in)
		if err != nil || f != tc.want || f.String() != tc.name {
			t.Errorf("Parse(%q) = %v (%s), %v; want %v (%s)", tc.in, f, f, err, tc.want, tc.name)
		}
	}
	if _, err := Parse("ip4"); err == nil || err.Error() != `unknown family "ip4" (want ipv4, ipv6 or any)` {
		t.Errorf("Parse(ip4) error %v", err)
	}
	if s := Family(5).String(); s != "family(5)" {
		t.Errorf("Family(5) = %q", s)
	}
}
