package bindings

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// updateBuffer is the capacity of the channel between the netlink
	// receiver and Run; the socket's own buffer comes on top of it.
	updateBuffer = 256
	// maxBatch bounds how many queued link updates Run applies per rebuild.
	maxBatch = 1024
	// Resubscription backoff after the link subscription failed.
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// Run keeps the table in step with the kernel's links until ctx is done: it
// subscribes to link updates (RTM_NEWLINK, which includes renames, and
// RTM_DELLINK), lists all links, then applies every update as it arrives and
// rescans all links every rescan (DefaultRescan if 0) as a safety net, and
// whenever Scan is called. If the subscription fails, Run logs it, keeps the
// periodic rescans, and retries the subscription with backoff, rescanning
// once it is back.
//
// Run works in the network namespace of the calling thread at the time it is
// called: it pins its goroutine to that thread (runtime.LockOSThread) for its
// whole life and opens every netlink socket from it, so goroutine migration
// cannot move it to another namespace, and no setns (CAP_SYS_ADMIN) is
// needed.
//
// Run returns nil when ctx is done, and an error if it is already running or
// if the initial link scan fails.
func (r *Resolver) Run(ctx context.Context, rescan time.Duration) error {
	if rescan <= 0 {
		rescan = DefaultRescan
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	run := &runState{scans: make(chan chan error), done: make(chan struct{})}
	r.mu.Lock()
	if r.run != nil {
		r.mu.Unlock()
		return errors.New("running bindings resolver: already running")
	}
	r.run = run
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.run = nil
		r.mu.Unlock()
		close(run.done)
	}()

	// Subscribe before the first dump: updates racing with the dump are
	// queued and applied after it. Each update sets or deletes one index
	// outright, so replaying them in order on the dump converges.
	sub, err := r.subscribe(r.logger)
	if err != nil {
		r.logger.Warn("subscribing to link updates failed, relying on rescans", "err", err)
	}
	defer func() { sub.close() }()
	if err := r.scanHere(); err != nil {
		return fmt.Errorf("initial link scan: %w", err)
	}

	ticker := time.NewTicker(rescan)
	defer ticker.Stop()
	retry := time.NewTimer(minBackoff)
	defer retry.Stop()
	backoff := minBackoff
	if sub != nil {
		retry.Stop()
	} else {
		backoff = min(2*backoff, maxBackoff)
	}

	for {
		var updates <-chan netlink.LinkUpdate
		var resync <-chan struct{}
		if sub != nil {
			updates, resync = sub.updates, sub.resync
		}
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				r.logger.Warn("link subscription ended, resubscribing")
				sub.close()
				sub = nil
				backoff = minBackoff
				retry.Reset(0)
				continue
			}
			r.applyChanges(sub.batch(u))
		case <-resync:
			r.rescan("subscription error")
		case <-ticker.C:
			r.rescan("periodic")
		case reply := <-run.scans:
			reply <- r.scanHere()
		case <-retry.C:
			s, err := r.subscribe(r.logger)
			if err != nil {
				r.logger.Warn("subscribing to link updates failed, relying on rescans",
					"err", err, "retry_in", backoff)
				retry.Reset(backoff)
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			sub = s
			r.logger.Info("link subscription restored")
			r.rescan("resubscribed")
		}
	}
}

func (r *Resolver) rescan(reason string) {
	if err := r.scanHere(); err != nil {
		r.logger.Warn("link rescan failed", "reason", reason, "err", err)
	}
}

// linkSub is one netlink link subscription.
type linkSub struct {
	updates chan netlink.LinkUpdate // closed by netlink when the socket fails
	resync  chan struct{}           // an update may have been lost
	done    chan struct{}           // closing it closes the socket
	once    sync.Once
}

// subscribeLinks subscribes to link updates on a socket opened on the
// calling thread, hence in its network namespace.
func subscribeLinks(logger *slog.Logger) (*linkSub, error) {
	s := &linkSub{
		updates: make(chan netlink.LinkUpdate, updateBuffer),
		resync:  make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	onError := func(err error) {
		select {
		case <-s.done:
			return // closing: the receive error is expected
		default:
		}
		logger.Warn("link subscription error", "err", err)
		select {
		case s.resync <- struct{}{}:
		default:
		}
	}
	err := netlink.LinkSubscribeWithOptions(s.updates, s.done, netlink.LinkSubscribeOptions{
		ErrorCallback: onError,
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to link updates: %w", err)
	}
	return s, nil
}

// close stops the subscription and waits for its receiver to finish. It is
// idempotent and nil-safe.
func (s *linkSub) close() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		close(s.done)
		for range s.updates { // unblock the receiver until it closes updates
		}
	})
}

// batch returns first and the updates already queued behind it (at most
// maxBatch in all) as link changes, so that a burst costs one rebuild.
func (s *linkSub) batch(first netlink.LinkUpdate) []linkChange {
	changes := appendChange(nil, first)
	for n := 1; n < maxBatch; n++ {
		select {
		case u, ok := <-s.updates:
			if !ok {
				return changes // Run sees the closed channel next
			}
			changes = appendChange(changes, u)
		default:
			return changes
		}
	}
	return changes
}

func appendChange(changes []linkChange, u netlink.LinkUpdate) []linkChange {
	if u.IfInfomsg.Index <= 0 {
		return changes
	}
	idx := uint32(u.IfInfomsg.Index)
	switch u.Header.Type {
	case unix.RTM_NEWLINK:
		if u.Link == nil || u.Link.Attrs() == nil || u.Link.Attrs().Name == "" {
			return changes
		}
		return append(changes, linkChange{Index: idx, Name: u.Link.Attrs().Name})
	case unix.RTM_DELLINK:
		return append(changes, linkChange{Index: idx})
	}
	return changes
}
