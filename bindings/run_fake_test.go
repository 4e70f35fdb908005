package bindings

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// fakeKernel stands in for netlink in Run: a link list and subscriptions the
// test drives.
type fakeKernel struct {
	mu        sync.Mutex
	links     []Link
	failSubs  int // how many subscribe calls fail before one succeeds
	subs      chan *fakeSub
	listCalls chan struct{}
}

type fakeSub struct {
	sub  *linkSub
	feed chan netlink.LinkUpdate
	fail chan struct{} // close: the socket breaks
}

func newFakeKernel(r *Resolver, links []Link, failSubs int) *fakeKernel {
	k := &fakeKernel{
		links:     links,
		failSubs:  failSubs,
		subs:      make(chan *fakeSub, 16),
		listCalls: make(chan struct{}, 64),
	}
	r.list = k.list
	r.subscribe = k.subscribe
	return k
}

func (k *fakeKernel) setLinks(links []Link) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.links = links
}

func (k *fakeKernel) list() ([]Link, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.listCalls <- struct{}{}
	return append([]Link(nil), k.links...), nil
}

func (k *fakeKernel) subscribe(*slog.Logger) (*linkSub, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failSubs > 0 {
		k.failSubs--
		return nil, errors.New("fake subscription failure")
	}
	fs := &fakeSub{
		sub: &linkSub{
			updates: make(chan netlink.LinkUpdate),
			resync:  make(chan struct{}, 1),
			done:    make(chan struct{}),
		},
		feed: make(chan netlink.LinkUpdate),
		fail: make(chan struct{}),
	}
	go func() { // the receiver: forwards until closed or broken
		defer close(fs.sub.updates)
		for {
			select {
			case <-fs.sub.done:
				return
			case <-fs.fail:
				return
			case u := <-fs.feed:
				select {
				case fs.sub.updates <- u:
				case <-fs.sub.done:
					return
				}
			}
		}
	}()
	k.subs <- fs
	return fs.sub, nil
}

func newLink(idx uint32, name string) netlink.LinkUpdate {
	u := netlink.LinkUpdate{Link: &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name, Index: int(idx)}}}
	u.Header.Type = unix.RTM_NEWLINK
	u.IfInfomsg.Index = int32(idx)
	return u
}

func delLink(idx uint32, name string) netlink.LinkUpdate {
	u := newLink(idx, name)
	u.Header.Type = unix.RTM_DELLINK
	return u
}

func waitChan[T any](t *testing.T, c <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(timeout):
		t.Fatalf("%s: not within %v", what, timeout)
	}
	var zero T
	return zero
}

func TestRunWithFakeKernel(t *testing.T) {
	spec := Spec{DefaultTag: "direct", Bindings: []Binding{{Device: "tun0", Tag: "t"}}}
	r := NewResolver(spec, discardLogger())
	// The first subscription fails: Run must still scan, then retry.
	k := newFakeKernel(r, []Link{{1, "lo"}}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, time.Hour) }()
	defer func() {
		cancel()
		if err := waitChan(t, errc, 5*time.Second, "Run returns"); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	lookup := func(idx uint32) Result { return r.Table().Lookup(idx, FamilyIPv4) }

	waitChan(t, k.listCalls, time.Second, "initial scan")
	sub := waitChan(t, k.subs, 3*time.Second, "subscription retried")
	waitChan(t, k.listCalls, time.Second, "rescan after subscribing")

	steps := []struct {
		name string
		feed []netlink.LinkUpdate
		idx  uint32
		want Result
	}{
		{"created", []netlink.LinkUpdate{newLink(5, "tun0")}, 5, Result{"t", "tun0", true}},
		{"deleted", []netlink.LinkUpdate{delLink(5, "tun0")}, 5, Result{"direct", "", false}},
		{"re-created", []netlink.LinkUpdate{newLink(6, "tun0")}, 6, Result{"t", "tun0", true}},
		{"renamed", []netlink.LinkUpdate{newLink(6, "tunz")}, 6, Result{"direct", "tunz", false}},
	}
	for _, st := range steps {
		for _, u := range st.feed {
			sub.feed <- u
		}
		testenv.Eventually(t, time.Second, func() bool { return lookup(st.idx) == st.want }, "%s", st.name)
	}

	// A subscription error asks for a rescan.
	k.setLinks([]Link{{1, "lo"}, {6, "tunz"}, {7, "tun0"}})
	sub.sub.resync <- struct{}{}
	waitChan(t, k.listCalls, time.Second, "rescan after subscription error")
	testenv.Eventually(t, time.Second, func() bool { return lookup(7) == Result{"t", "tun0", true} }, "rescanned tun0")

	// The subscription breaks: Run resubscribes at once and rescans, which
	// recovers the updates lost meanwhile.
	k.setLinks([]Link{{1, "lo"}, {8, "tun0"}})
	close(sub.fail)
	sub = waitChan(t, k.subs, time.Second, "resubscribed")
	testenv.Eventually(t, time.Second, func() bool {
		return lookup(8) == Result{"t", "tun0", true} && lookup(7) == Result{"direct", "", false}
	}, "rescanned after resubscribing")
	sub.feed <- newLink(9, "eth9")
	testenv.Eventually(t, time.Second, func() bool { return lookup(9).Device == "eth9" }, "new subscription delivers")

	// Scan is served by Run.
	k.setLinks([]Link{{1, "lo"}, {10, "tun0"}})
	if err := r.Scan(); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if got := lookup(10); got != (Result{"t", "tun0", true}) {
		t.Errorf("after Scan: %+v", got)
	}
}

func TestRunPeriodicRescan(t *testing.T) {
	r := NewResolver(Spec{DefaultTag: "direct"}, discardLogger())
	k := newFakeKernel(r, []Link{{1, "lo"}}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx, 20*time.Millisecond) }()
	for i := range 3 {
		waitChan(t, k.listCalls, time.Second, "scan "+itoa(uint32(i)))
	}
	cancel()
	if err := waitChan(t, errc, 5*time.Second, "Run returns"); err != nil {
		t.Errorf("Run: %v", err)
	}
	// After Run, Scan works directly.
	if err := r.Scan(); err != nil {
		t.Errorf("Scan after Run: %v", err)
	}
}

func TestRunInitialScanError(t *testing.T) {
	r := NewResolver(Spec{DefaultTag: "direct"}, discardLogger())
	k := newFakeKernel(r, nil, 0)
	r.list = func() ([]Link, error) { return nil, errors.New("boom") }
	err := r.Run(context.Background(), time.Hour)
	if err == nil || err.Error() != "initial link scan: boom" {
		t.Errorf("Run: err = %v", err)
	}
	// The subscription opened before the scan is closed again.
	sub := waitChan(t, k.subs, time.Second, "subscription")
	select {
	case <-sub.sub.done:
	default:
		t.Error("subscription left open")
	}
}
