package bindings

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// eventDeadline is how fast a link change must reach the table. Run is
// started with a one-hour rescan, so only netlink events can meet it.
const eventDeadline = time.Second

// startRun runs r.Run in the namespace and stops it at cleanup (before the
// namespace is deleted, cleanups being LIFO).
func startRun(t *testing.T, n *testNS, r *Resolver) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := n.Go(func() error { return r.Run(ctx, time.Hour) })
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	testenv.Eventually(t, 5*time.Second, func() bool {
		select {
		case err := <-errc:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		return r.Table().Lookup(1, FamilyIPv4).Device == "lo"
	}, "initial scan")
}

func TestRunFollowsLinks(t *testing.T) {
	n := newTestNS(t)
	spec := Spec{DefaultTag: "direct", Bindings: []Binding{
		{Device: "tun0", Tag: "tunnel-a"},
		{Device: "tun1", Family: FamilyIPv6, Tag: "t1-v6"},
	}}
	logs := &testenv.SyncBuffer{}
	r := NewResolver(spec, slog.New(slog.NewTextHandler(logs, nil)))
	startRun(t, n, r)

	lookup := func(idx uint32, fam Family, want Result) func() bool {
		return func() bool { return r.Table().Lookup(idx, fam) == want }
	}
	bound := func(i int, idx uint32, present bool) func() bool {
		return func() bool {
			bd := r.Table().Bound()[i]
			return bd.Present == present && bd.Ifindex == idx
		}
	}
	both := func(fs ...func() bool) func() bool {
		return func() bool {
			for _, f := range fs {
				if !f() {
					return false
				}
			}
			return true
		}
	}

	// Created: bound.
	idx1 := n.addLink("tun0")
	testenv.Eventually(t, eventDeadline, both(
		lookup(idx1, FamilyIPv4, Result{"tunnel-a", "tun0", true}),
		lookup(idx1, FamilyIPv6, Result{"tunnel-a", "tun0", true}),
		bound(0, idx1, true)), "tun0 bound")

	// Deleted: gone.
	n.mustIP("link", "del", "tun0")
	testenv.Eventually(t, eventDeadline, both(
		lookup(idx1, FamilyIPv4, Result{"direct", "", false}),
		bound(0, 0, false)), "tun0 gone")

	// Re-created with a new ifindex: bound again.
	idx2 := n.addLink("tun0")
	if idx2 == idx1 {
		t.Fatalf("re-created tun0 kept ifindex %d", idx1)
	}
	testenv.Eventually(t, eventDeadline, both(
		lookup(idx2, FamilyIPv4, Result{"tunnel-a", "tun0", true}),
		bound(0, idx2, true)), "re-created tun0 bound")

	// Renamed away: the index stays known under its new name, unbound.
	n.mustIP("link", "set", "dev", "tun0", "name", "tunz")
	testenv.Eventually(t, eventDeadline, both(
		lookup(idx2, FamilyIPv4, Result{"direct", "tunz", false}),
		bound(0, 0, false)), "tun0 renamed to tunz")

	// Renamed onto a per-family binding.
	n.mustIP("link", "set", "dev", "tunz", "name", "tun1")
	testenv.Eventually(t, eventDeadline, both(
		lookup(idx2, FamilyIPv6, Result{"t1-v6", "tun1", true}),
		lookup(idx2, FamilyIPv4, Result{"direct", "tun1", false}),
		bound(1, idx2, true)), "tunz renamed to tun1")

	// Another link renamed onto tun0.
	idx3 := n.addLink("other0")
	n.mustIP("link", "set", "dev", "other0", "name", "tun0")
	testenv.Eventually(t, eventDeadline, both(
		lookup(idx3, FamilyIPv4, Result{"tunnel-a", "tun0", true}),
		bound(0, idx3, true)), "other0 renamed to tun0")

	if err := r.Run(context.Background(), time.Hour); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: err = %v, want already running", err)
	}

	// Scan on demand from a thread in the root namespace: Run does it in
	// the test namespace.
	if err := r.Scan(); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if got, want := r.Table().Links(), n.links(); !slices.Equal(got, want) {
		t.Errorf("after Scan the table has %v, the namespace %v (root: %v)", got, want, rootLinks(t))
	}

	// Unbound links in the namespace still resolve to their names, and
	// their lookups count as misses.
	v4Before, _ := r.Misses()
	if got := r.Lookup(1, FamilyIPv4); got != (Result{"direct", "lo", false}) {
		t.Errorf("Lookup(lo) = %+v", got)
	}
	if v4, _ := r.Misses(); v4 != v4Before+1 {
		t.Errorf("v4 misses %d, want %d", v4, v4Before+1)
	}

	out := logs.String()
	for _, w := range []string{
		`msg="device bound" component=bindings device=tun0 family=any ifindex=` + itoa(idx1),
		`msg="device gone" component=bindings device=tun0 family=any ifindex=` + itoa(idx1),
		`msg="device bound" component=bindings device=tun0 family=any ifindex=` + itoa(idx2),
		`msg="device bound" component=bindings device=tun1 family=ipv6 ifindex=` + itoa(idx2),
	} {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

func itoa(u uint32) string { return strconv.FormatUint(uint64(u), 10) }

// TestScanInCallingNamespace checks that Scan without Run lists the links of
// the calling thread's namespace, not those of the initial one.
func TestScanInCallingNamespace(t *testing.T) {
	n := newTestNS(t)
	idx := n.addLink("tun0")
	r := NewResolver(Spec{DefaultTag: "direct", Bindings: []Binding{{Device: "tun0"}}}, discardLogger())
	select {
	case err := <-n.Go(r.Scan):
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Scan did not return within 10s")
	}
	if got, want := r.Table().Links(), n.links(); !slices.Equal(got, want) {
		t.Errorf("table has %v, namespace %v (root: %v)", got, want, rootLinks(t))
	}
	if got := r.Lookup(idx, FamilyIPv6); got != (Result{"tun0", "tun0", true}) {
		t.Errorf("Lookup(tun0) = %+v", got)
	}
}
