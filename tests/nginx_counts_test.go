package tests

import (
	"maps"
	"testing"
)

// TestNginxCounts: Debian's nginx (2 workers) with wildcard IPv4 and IPv6
// listeners, two name-based server blocks and a dual-stack listener (IPv4
// arrives v4-mapped); clients over every path and family send 2xx, 3xx,
// 4xx and 5xx requests; the per (tag, vip, code) counts equal what was sent,
// nothing is rejected and no line misses the tuple map.
func TestNginxCounts(t *testing.T) {
	n := newNginxEnv(t, 2, "")
	n.startHelper()
	const perCode = 3
	want := map[string]uint64{}
	var sent uint64
	for _, port := range []int{n.port, n.dsPort} {
		for _, p := range paths {
			ns := p.ns(n.topo)
			for _, fam := range families {
				wantFam := map[string]string{"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4"}[fam]
				c := n.client(ns, fam, port)
				for _, code := range nginxCodes {
					for range perCode {
						if err := c.get(code); err != nil {
							t.Fatalf("%s %s port %d: %v", p.name, fam, port, err)
						}
						want[expectedTag(p.dev, wantFam)+" "+n.vipLabel(fam)+" "+codeClass(code)]++
						sent++
					}
				}
			}
		}
	}
	st := n.waitLines(sent)
	if !maps.Equal(st.Requests, want) {
		t.Errorf("requests per (tag, vip, code):\n got  %v\n want %v", st.Requests, want)
	}
	if st.Stats.Lines != sent || st.Stats.Recorded != sent || st.Stats.Rejected != 0 || st.Stats.TupleMisses != 0 {
		t.Errorf("stats %+v, want %d lines all recorded", st.Stats, sent)
	}
}
