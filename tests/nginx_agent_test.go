package tests

import (
	"fmt"
	"testing"
)

// TestNginxThroughAgent: the nginx ingest as operators run it, inside
// `ipng-stats agent` (nginx.enabled), served on the agent's scrape endpoint:
// requests over several paths and families count exactly per (tag, vip,
// code).
func TestNginxThroughAgent(t *testing.T) {
	n := newNginxEnv(t, 1, "")
	a := newIngestAgent(n, "")

	want := map[string]uint64{}
	var sent uint64
	for _, c := range []struct {
		p    path
		fam  string
		code int
	}{{paths[0], "ipv4", 200}, {paths[0], "ipv6", 404}, {paths[1], "mapped", 503}, {paths[2], "ipv6", 301}, {paths[4], "ipv4", 200}} {
		cl := n.client(c.p.ns(n.topo), c.fam, n.port)
		wantFam := map[string]string{"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4"}[c.fam]
		for range 4 {
			if err := cl.get(c.code); err != nil {
				t.Fatalf("%s %s: %v", c.p.name, c.fam, err)
			}
			want[expectedTag(c.p.dev, wantFam)+" "+n.vipLabel(c.fam)+" "+codeClass(c.code)]++
			sent++
		}
	}

	a.waitRequests(fmt.Sprintf("after %d requests", sent), want)
}
