// Package loader owns the life of the sock_ops program in the kernel: it
// loads it, attaches it to a cgroup2 with a bpf_link, pins the link and the
// maps so that attribution survives agent restarts, and opens those pins for
// readers. It does not interpret stamps beyond decoding them (package
// attribution) nor map them to tags (package bindings).
package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"golang.org/x/sys/unix"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// Pin names below the pin directory.
const (
	PinLink     = "sockops_link"
	PinSk       = ipngbpf.SockopsMapIpngSk
	PinByCookie = ipngbpf.SockopsMapIpngByCookie
	PinByTuple  = ipngbpf.SockopsMapIpngByTuple
	PinCounters = ipngbpf.SockopsMapIpngCounters
	PinEvents   = ipngbpf.SockopsMapIpngEvents
)

// Config says where to attach and pin.
type Config struct {
	// Cgroup is the cgroup2 directory to attach to: "" for the root
	// (every socket on the host), relative to the cgroup2 mount, or absolute.
	Cgroup string
	// PinDir holds the pinned link and maps, on a bpf filesystem.
	PinDir string
	// KeepOnExit leaves the program attached and pinned on Close.
	KeepOnExit bool
	// CookieMapEntries and TupleMapEntries size the LRU maps; 0 keeps the
	// compiled-in size.
	CookieMapEntries uint32
	TupleMapEntries  uint32
}

// Program is the loaded, attached and pinned sock_ops program.
type Program struct {
	objs   ipngbpf.SockopsObjects
	link   link.Link
	cfg    Config
	cgroup string
	reused bool
	log    *slog.Logger

	malformed atomic.Uint64 // ring-buffer records ReadEvents skipped
}

// Load loads the program, reusing pinned maps and the pinned link when they
// exist (so sockets stamped before an agent restart stay visible, and the
// program is replaced in place without a gap), and attaches it otherwise.
func Load(cfg Config, logger *slog.Logger) (*Program, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "loader")
	if err := requireCapabilities(); err != nil {
		return nil, err
	}
	cgroup, err := ResolveCgroup(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	if err := ensurePinDir(cfg.PinDir); err != nil {
		return nil, err
	}
	spec, err := ipngbpf.LoadSockops()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF object: %w", err)
	}
	for name, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
		switch name {
		case PinByCookie:
			if cfg.CookieMapEntries != 0 {
				m.MaxEntries = cfg.CookieMapEntries
			}
		case PinByTuple:
			if cfg.TupleMapEntries != 0 {
				m.MaxEntries = cfg.TupleMapEntries
			}
		}
	}
	p := &Program{cfg: cfg, cgroup: cgroup, log: logger}
	err = spec.LoadAndAssign(&p.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("pinned maps in %s do not match this version or the configured map sizes: %w; stop the agent and remove them (ipng-stats detach --bpf.pin-dir %s), then start again", cfg.PinDir, err, cfg.PinDir)
	}
	if err != nil {
		return nil, explain("loading sock_ops program", err)
	}
	if err := p.attach(); err != nil {
		p.objs.Close()
		if !p.linkWasPinned() {
			// Nothing was attached before: the map pins just made are
			// stale, and readers would mistake them for a running agent.
			Detach(cfg.PinDir)
		}
		return nil, err
	}
	if err := p.chmodMaps(); err != nil {
		p.Close()
		return nil, err
	}
	logger.Info("sock_ops program attached", "cgroup", cgroup, "pin_dir", cfg.PinDir, "reused_pins", p.reused)
	return p, nil
}

// attach replaces the program of a pinned link on the same cgroup, or
// attaches a new link and pins it.
func (p *Program) attach() error {
	pin := filepath.Join(p.cfg.PinDir, PinLink)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		same, why := p.sameCgroup(l)
		if same {
			if err := l.Update(p.objs.IpngSockops); err != nil {
				l.Close()
				return explain("updating pinned sock_ops link", err)
			}
			p.link, p.reused = l, true
			return nil
		}
		p.log.Warn("replacing pinned link", "reason", why)
		if err := l.Unpin(); err != nil {
			l.Close()
			return fmt.Errorf("removing pinned link %s: %w", pin, err)
		}
		l.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("opening pinned link %s: %w", pin, err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: p.cgroup, Attach: ebpf.AttachCGroupSockOps, Program: p.objs.IpngSockops})
	if err != nil {
		return explain(fmt.Sprintf("attaching sock_ops to cgroup %q", p.cgroup), err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pinning link at %s: %w (the kernel may lack bpf_link for cgroups: Linux 5.7+ is required)", pin, err)
	}
	p.link = l
	return nil
}

func (p *Program) sameCgroup(l link.Link) (bool, string) {
	info, err := l.Info()
	if err != nil {
		return false, fmt.Sprintf("link info: %v", err)
	}
	cg := info.Cgroup()
	if cg == nil {
		return false, "pinned link is not a cgroup link"
	}
	id, err := cgroupID(p.cgroup)
	if err != nil {
		return false, fmt.Sprintf("cgroup id: %v", err)
	}
	if cg.CgroupId != id {
		return false, fmt.Sprintf("pinned link is attached to cgroup id %d, configured cgroup %s is id %d", cg.CgroupId, p.cgroup, id)
	}
	return true, ""
}

// chmodMaps makes the pinned maps readable by unprivileged readers; the link
// stays root-only.
func (p *Program) chmodMaps() error {
	for _, name := range []string{PinSk, PinByCookie, PinByTuple, PinCounters} {
		if err := os.Chmod(filepath.Join(p.cfg.PinDir, name), 0o644); err != nil {
			return fmt.Errorf("making pinned map readable: %w", err)
		}
	}
	return nil
}

func (p *Program) linkWasPinned() bool {
	_, err := os.Stat(filepath.Join(p.cfg.PinDir, PinLink))
	return err == nil
}

// Reused reports whether Load found an attached, pinned program and took it over.
func (p *Program) Reused() bool { return p.reused }

// Cgroup is the absolute cgroup2 directory the program is attached to.
func (p *Program) Cgroup() string { return p.cgroup }

// Maps gives read access to the program's maps. They stay owned by p.
func (p *Program) Maps() *Maps {
	return &Maps{Sk: p.objs.IpngSk, ByCookie: p.objs.IpngByCookie, ByTuple: p.objs.IpngByTuple, Counters: p.objs.IpngCounters, Events: p.objs.IpngEvents, owned: false}
}

// Close releases the program. Unless KeepOnExit is set, it detaches the
// program and removes the pins; with KeepOnExit the pins keep it attached.
func (p *Program) Close() error {
	var errs []error
	if !p.cfg.KeepOnExit {
		errs = append(errs, Detach(p.cfg.PinDir))
	}
	if p.link != nil {
		errs = append(errs, p.link.Close())
	}
	errs = append(errs, p.objs.Close())
	if p.cfg.KeepOnExit {
		p.log.Info("sock_ops program left attached", "pin_dir", p.cfg.PinDir)
	} else {
		p.log.Info("sock_ops program detached", "cgroup", p.cgroup)
	}
	return errors.Join(errs...)
}

// Detach removes the pinned link (detaching the program once no process holds
// it) and the pinned maps, then the pin directory if it is empty. Missing
// pins are not an error.
func Detach(pinDir string) error {
	var errs []error
	for _, name := range []string{PinLink, PinSk, PinByCookie, PinByTuple, PinCounters, PinEvents} {
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing pin: %w", err))
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		errs = append(errs, fmt.Errorf("removing pin directory: %w", err))
	}
	return errors.Join(errs...)
}
