package bindings

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/vishvananda/netns"
)

// Helpers for the privileged tests: a throw-away network namespace driven
// with ip(8). Without root they skip, unless IPNG_STATS_E2E=1 demands them.

const cmdTimeout = 10 * time.Second

// skipOrFail skips the test, or fails it when IPNG_STATS_E2E=1.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	testenv.Skip(t, fmt.Sprintf(format, args...))
}

type testNS struct {
	t        *testing.T
	name     string
	linkType string // a virtual link type this kernel can create
}

// newTestNS creates a uniquely named network namespace, deleted at cleanup.
func newTestNS(t *testing.T) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipOrFail(t, "needs ip(8): %v", err)
	}
	name := "ipngb-" + rand.Text()[:10]
	if out, err := run("ip", "netns", "add", name); err != nil {
		skipOrFail(t, "cannot create network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := run("ip", "netns", "del", name); err != nil {
			t.Errorf("deleting network namespace %s: %v: %s", name, err, out)
		}
	})
	n := &testNS{t: t, name: name}
	// Find a link type the kernel supports (dummy may be missing).
	const probe = "probe0"
	for _, typ := range []string{"dummy", "bridge", "ifb"} {
		if _, err := n.ip("link", "add", probe, "type", typ); err == nil {
			n.linkType = typ
			n.mustIP("link", "del", probe)
			break
		}
	}
	if n.linkType == "" {
		skipOrFail(t, "cannot create dummy, bridge or ifb links")
	}
	return n
}

func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (n *testNS) ip(args ...string) (string, error) {
	return run("ip", append([]string{"-n", n.name}, args...)...)
}

func (n *testNS) mustIP(args ...string) string {
	n.t.Helper()
	out, err := n.ip(args...)
	if err != nil {
		n.t.Fatalf("ip -n %s %s: %v: %s", n.name, strings.Join(args, " "), err, out)
	}
	return out
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
	n.t.Fatalf("link %s not found in %s", name, n.name)
	return 0
}

// inNS runs fn on a goroutine locked to a thread that has entered the
// namespace. The thread is never unlocked, so the runtime discards it.
func (n *testNS) inNS(fn func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(n.name)
		if err != nil {
			errc <- fmt.Errorf("opening namespace %s: %w", n.name, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", n.name, err)
			return
		}
		errc <- fn()
	}()
	return errc
}

func rootLinks(t *testing.T) []Link {
	t.Helper()
	links, err := listLinks()
	if err != nil {
		t.Fatalf("listing root namespace links: %v", err)
	}
	return links
}
