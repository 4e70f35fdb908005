package bindings

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// dumpAttempts bounds the retries of a link dump the kernel reports as
	// interrupted (NLM_F_DUMP_INTR: links changed while dumping).
	dumpAttempts = 5
	// netlinkTimeout bounds each send/receive of a link dump.
	netlinkTimeout = 5 * time.Second
)

// Scan lists the kernel's links now and rebuilds the table (configuration
// reload, tests). Without an active Run the links are those of the network
// namespace of the calling thread. While Run is active, Scan asks Run to do
// the scan, in Run's namespace and ordered against the link events, and
// waits for its result.
func (r *Resolver) Scan() error {
	r.mu.Lock()
	run := r.run
	r.mu.Unlock()
	if run != nil {
		reply := make(chan error, 1)
		select {
		case run.scans <- reply:
			return <-reply
		case <-run.done:
			// Run returned meanwhile: scan here.
		}
	}
	return r.scanHere()
}

// scanHere lists the links of the calling thread's namespace and replaces
// the known links with them.
func (r *Resolver) scanHere() error {
	links, err := r.list()
	if err != nil {
		return err
	}
	r.SetLinks(links)
	return nil
}

// listLinks dumps the links of the calling thread's network namespace. It
// uses its own netlink socket, opened on the calling thread, never the
// package-level handle of the netlink library (created at program start in
// the initial namespace).
func listLinks() ([]Link, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		return nil, fmt.Errorf("setting netlink socket timeout: %w", err)
	}
	var nls []netlink.Link
	for attempt := 1; ; attempt++ {
		nls, err = h.LinkList()
		if err == nil {
			break
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == dumpAttempts {
			return nil, fmt.Errorf("listing links: %w", err)
		}
	}
	links := make([]Link, 0, len(nls))
	for _, l := range nls {
		a := l.Attrs()
		if a == nil || a.Index <= 0 || a.Name == "" {
			continue
		}
		links = append(links, Link{Index: uint32(a.Index), Name: a.Name})
	}
	return links, nil
}
