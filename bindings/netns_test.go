package bindings

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// Helpers for the privileged tests: a throw-away network namespace
// (testenv.NS) driven with ip(8). Without root they skip, unless
// IPNG_STATS_E2E=1 demands them.

type testNS struct {
	*testenv.NS
	t        *testing.T
	linkType string // a virtual link type this kernel can create
}

// newTestNS creates a uniquely named network namespace, deleted at cleanup.
func newTestNS(t *testing.T) *testNS {
	t.Helper()
	testenv.RequireNetns(t)
	n := &testNS{NS: testenv.NewNS(t, "ipngb"), t: t}
	// Find a link type the kernel supports (dummy may be missing).
	const probe = "probe0"
	for _, typ := range []string{"dummy", "bridge", "ifb"} {
		if _, err := n.IP("link", "add", probe, "type", typ); err == nil {
			n.linkType = typ
			n.mustIP("link", "del", probe)
			break
		}
	}
	if n.linkType == "" {
		testenv.Skip(t, "cannot create dummy, bridge or ifb links")
	}
	return n
}

func (n *testNS) mustIP(args ...string) string {
	n.t.Helper()
	return strings.TrimSpace(n.Out(n.t, args...))
}

// addLink creates a link and returns its ifindex.
func (n *testNS) addLink(name string) uint32 {
	n.t.Helper()
	n.mustIP("link", "add", name, "type", n.linkType)
	return n.index(name)
}

func (n *testNS) links() []Link {
	n.t.Helper()
	var js []struct {
		Ifindex uint32 `json:"ifindex"`
		Ifname  string `json:"ifname"`
	}
	out := n.mustIP("-j", "link", "show")
	if err := json.Unmarshal([]byte(out), &js); err != nil {
		n.t.Fatalf("parsing ip -j link show: %v: %s", err, out)
	}
	links := make([]Link, len(js))
	for i, l := range js {
		links[i] = Link{Index: l.Ifindex, Name: l.Ifname}
	}
	slices.SortFunc(links, func(a, b Link) int { return int(a.Index) - int(b.Index) })
	return links
}

func (n *testNS) index(name string) uint32 {
	n.t.Helper()
	for _, l := range n.links() {
		if l.Name == name {
			return l.Index
		}
	}
	n.t.Fatalf("link %s not found in %s", name, n.Name)
	return 0
}

func rootLinks(t *testing.T) []Link {
	t.Helper()
	links, err := listLinks()
	if err != nil {
		t.Fatalf("listing root namespace links: %v", err)
	}
	return links
}
