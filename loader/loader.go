// Package loader owns the life of the sock_ops program in the kernel: it
// loads it, attaches it to a cgroup2 with a bpf_link, pins the link and the
// maps so that attribution survives agent restarts, and opens those pins for
// readers. It owns the program's ABI: only loader touches the types bpf2go
// generates (package bpf) and hands cilium/ebpf raw pointers; readers get
// typed, allocation-free lookups (Maps.LookupFd, LookupCookie, LookupTuple)
// returning a Stamp. It does not interpret stamps beyond decoding them
// (package attribution) nor map them to tags (package bindings, which sits
// above it: loader depends only on package family).
package loader

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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
	PinCounters = ipngbpf.SockopsMapIpngCounters
	PinIfaces   = ipngbpf.SockopsMapIpngIfaces
	// PinIfaceSlots: ipng_ifaces of small ifindexes, in an array.
	PinIfaceSlots = ipngbpf.SockopsMapIpngIfaceSlots
	PinTagNames   = ipngbpf.SockopsMapIpngTagNames
	PinConns      = ipngbpf.SockopsMapIpngConns
	// PinSeries and PinSeriesNext: the index of each (tag, VIP) series in
	// ipng_conns, and the next free one.
	PinSeries     = ipngbpf.SockopsMapIpngSeries
	PinSeriesNext = ipngbpf.SockopsMapIpngSeriesNext
	// PinTupleStamps, PinTupleRing and PinTupleHead: the stamps written for
	// the nginx ingest, the ring of the hashes of their 4-tuples, and the
	// next sequence number.
	PinTupleStamps = ipngbpf.SockopsMapIpngTupleStamps
	PinTupleRing   = ipngbpf.SockopsMapIpngTupleRing
	PinTupleHead   = ipngbpf.SockopsMapIpngTupleHead
	// pinByTuple is the LRU map of 4-tuples of versions before the ring
	// of stamps; Load and Detach remove a leftover pin.
	pinByTuple = "ipng_by_tuple"
	// pinEvents is the ring buffer of versions before the in-kernel
	// connection counts; Load and Detach remove a leftover pin.
	pinEvents = "ipng_events"
	// PinHandshakeCounts is the handshake counts map, pinned by package
	// handshake while the agent runs (for `ipng-stats check`); Detach
	// removes a leftover of a killed agent.
	PinHandshakeCounts = ipngbpf.HandshakeMapIpngHsCounts
)

// DefaultTupleStamps is the size of the ring of stamps for the nginx ingest
// when Config.TupleMapEntries is 0 (the default bpf.tuple_map_entries).
const DefaultTupleStamps = 262144

// mapPins are the pins of every map, in the order Detach removes them.
var mapPins = []string{PinSk, PinByCookie, PinTupleStamps, PinCounters, PinIfaces, PinIfaceSlots, PinTagNames, PinConns,
	PinSeries, PinSeriesNext, PinTupleRing, PinTupleHead}

// stalePins are the pins of maps of earlier versions that nothing reads
// any more; Load and Detach remove them.
var stalePins = []string{pinEvents, pinByTuple}

// seriesPins are replaced together (see loadObjects).
var seriesPins = []string{PinSeries, PinSeriesNext, PinConns, PinByCookie, PinSk}

// otherPins are pinned in the pin directory by other packages (handshake)
// while the agent runs; Detach removes a killed agent's leftovers.
var otherPins = []string{PinHandshakeCounts}

// Config says where to attach and pin.
type Config struct {
	// Cgroup is the cgroup2 directory to attach to: "" for the root
	// (every socket on the host), relative to the cgroup2 mount, or absolute.
	Cgroup string
	// PinDir holds the pinned link and maps, on a bpf filesystem.
	PinDir string
	// KeepOnExit leaves the program attached and pinned on Close.
	KeepOnExit bool
	// CookieMapEntries sizes the cookie LRU map; 0 keeps the compiled-in
	// size. TupleMapEntries is the number of stamps the ring of stamps for
	// the nginx ingest holds (rounded up to a power of two; 0:
	// DefaultTupleStamps).
	CookieMapEntries uint32
	TupleMapEntries  uint32
	// Tuples writes the ring of stamps the nginx ingest reads
	// (ipng_tuple_stamps, with ipng_tuple_ring). Without it the program
	// does not write them and they are created with one entry: servers
	// that do not need them do not pay for them.
	Tuples bool
	// SkStorage also stamps each socket's storage (ipng_sk), which
	// in-process servers look up by fd. Creating socket storage is the most
	// expensive step of a stamp (an allocation per accepted socket on the
	// host), so it is off unless the agent fronts servers itself with BPF
	// attribution; without it, those servers find the stamp by socket
	// cookie (ipng_by_cookie), one getsockopt more.
	SkStorage bool
}

// Program is the loaded, attached and pinned sock_ops program.
type Program struct {
	objs   ipngbpf.SockopsObjects
	link   link.Link
	cfg    Config
	cgroup string
	reused bool
	// replaced is set when pinned maps of another layout or size were
	// replaced (an upgrade, or changed map sizes).
	replaced bool
	log      *slog.Logger
	repins   atomic.Uint64
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
	if err := privateMounts(cfg, logger); err != nil {
		return nil, err
	}
	cgroup, err := ResolveCgroup(cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	if err := ensurePinDir(cfg.PinDir); err != nil {
		return nil, err
	}
	spec, err := programSpec(cfg)
	if err != nil {
		return nil, err
	}
	for _, name := range mapPins {
		if m, ok := spec.Maps[name]; ok {
			m.Pinning = ebpf.PinByName
		}
	}
	p := &Program{cfg: cfg, cgroup: cgroup, log: logger}
	if err := p.loadObjects(spec); err != nil {
		return nil, err
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
	logger.Info("sock_ops program attached", "cgroup", cgroup, "pin_dir", cfg.PinDir, "reused_pins", p.reused,
		"replaced_pins", p.replaced, "tuple_map", cfg.Tuples, "socket_storage", cfg.SkStorage)
	return p, nil
}

// programSpec is the embedded program with the configured map sizes and
// load-time constants: the network namespace whose interfaces the agent
// tags (the caller's) and whether the 4-tuple map is written.
func programSpec(cfg Config) (*ebpf.CollectionSpec, error) {
	spec, err := ipngbpf.LoadSockops()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF object: %w", err)
	}
	if cfg.CookieMapEntries != 0 {
		spec.Maps[PinByCookie].MaxEntries = cfg.CookieMapEntries
	}
	if n := spec.Maps[PinIfaceSlots].MaxEntries; n != slots {
		return nil, fmt.Errorf("%s has %d entries, loader writes %d", PinIfaceSlots, n, slots)
	}
	tuples, ring, stamps := uint8(0), uint32(1), uint32(1)
	if cfg.Tuples {
		n := cfg.TupleMapEntries
		if n == 0 {
			n = DefaultTupleStamps
		}
		tuples, ring = 1, tupleRingSize(n)
		stamps = ring / TupleRingFactor
	}
	spec.Maps[PinTupleRing].MaxEntries = ring
	spec.Maps[PinTupleStamps].MaxEntries = stamps
	if err := spec.Variables[ipngbpf.SockopsVarRingMask].Set(ring - 1); err != nil {
		return nil, fmt.Errorf("setting ring_mask: %w", err)
	}
	if err := spec.Variables[ipngbpf.SockopsVarStampMask].Set(stamps - 1); err != nil {
		return nil, fmt.Errorf("setting stamp_mask: %w", err)
	}
	netns, err := NetnsCookie()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[ipngbpf.SockopsVarOwnNetns].Set(netns); err != nil {
		return nil, fmt.Errorf("setting own_netns: %w", err)
	}
	if err := spec.Variables[ipngbpf.SockopsVarTupleEnabled].Set(tuples); err != nil {
		return nil, fmt.Errorf("setting tuple_enabled: %w", err)
	}
	sk := uint8(0)
	if cfg.SkStorage {
		sk = 1
	}
	if err := spec.Variables[ipngbpf.SockopsVarSkEnabled].Set(sk); err != nil {
		return nil, fmt.Errorf("setting sk_enabled: %w", err)
	}
	return spec, nil
}

// loadObjects loads the program and its maps, reusing the pinned maps.
// Pinned maps of another layout (a version upgrade) or size (changed
// configuration) are replaced one by one: the pinned link keeps the old
// program attached until attach swaps in the new one, so no connection goes
// unstamped, but what the replaced maps held is lost.
func (p *Program) loadObjects(spec *ebpf.CollectionSpec) error {
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue // .rodata: the load-time constants
		}
		pin := filepath.Join(p.cfg.PinDir, name)
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			continue // absent (created by the load), or unreadable (the load says why)
		}
		cerr := ms.Compatible(m)
		m.Close()
		if cerr == nil {
			continue
		}
		p.log.Warn("pinned map does not match this version or the configured size: replacing it", "map", name, "reason", cerr)
		if err := os.Remove(pin); err != nil {
			return fmt.Errorf("replacing pinned map %s: %w", name, err)
		}
		p.replaced = true
	}
	// The series indexes, their counts, the next free index and the
	// stamps of live sockets (which name their series by index) hold
	// together: when one of them is missing or was replaced, all start
	// afresh (a reused index would add to another series' counts).
	var present []string
	for _, name := range seriesPins {
		if _, ok := spec.Maps[name]; !ok {
			continue
		}
		if _, err := os.Stat(filepath.Join(p.cfg.PinDir, name)); err == nil {
			present = append(present, name)
		}
	}
	if len(present) > 0 && len(present) < len(seriesPins) {
		p.log.Warn("pinned connection-count maps or live stamps are incomplete: replacing them", "present", present)
		for _, name := range present {
			if err := os.Remove(filepath.Join(p.cfg.PinDir, name)); err != nil {
				return fmt.Errorf("replacing pinned map %s: %w", name, err)
			}
		}
		p.replaced = true
	}
	if err := spec.LoadAndAssign(&p.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: p.cfg.PinDir}}); err != nil {
		return explain("loading sock_ops program", err)
	}
	// A ring buffer pinned by a version before in-kernel counting, and a
	// 4-tuple LRU map of a version before the ring of stamps, have no
	// reader any more.
	for _, stale := range stalePins {
		if rerr := os.Remove(filepath.Join(p.cfg.PinDir, stale)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("removing stale pin: %w", rerr)
		}
	}
	return nil
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

// chmodMaps gives the pins their modes: the maps readable by the pin
// directory's group (PinMapMode), the link the owner's only (PinLinkMode).
func (p *Program) chmodMaps() error {
	for _, name := range []string{PinSk, PinByCookie, PinTupleStamps, PinCounters, PinTagNames, PinConns, PinSeries, PinSeriesNext, PinIfaces, PinIfaceSlots, PinTupleRing, PinTupleHead} {
		if err := os.Chmod(filepath.Join(p.cfg.PinDir, name), PinMapMode); err != nil {
			return fmt.Errorf("setting the mode of a pinned map: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(p.cfg.PinDir, PinLink), PinLinkMode); err != nil {
		return fmt.Errorf("setting the mode of the pinned link: %w", err)
	}
	return nil
}

func (p *Program) linkWasPinned() bool {
	_, err := os.Stat(filepath.Join(p.cfg.PinDir, PinLink))
	return err == nil
}

// ReplacedPins reports whether Load replaced pinned maps of another layout
// or size.
func (p *Program) ReplacedPins() bool { return p.replaced }

// Reused reports whether Load found an attached, pinned program and took it over.
func (p *Program) Reused() bool { return p.reused }

// Cgroup is the absolute cgroup2 directory the program is attached to.
func (p *Program) Cgroup() string { return p.cgroup }

// Maps gives read access to the program's maps. They stay owned by p.
func (p *Program) Maps() *Maps {
	var stamps, sk, ring, head *ebpf.Map
	if p.cfg.Tuples {
		stamps, ring, head = p.objs.IpngTupleStamps, p.objs.IpngTupleRing, p.objs.IpngTupleHead
	}
	if p.cfg.SkStorage {
		sk = p.objs.IpngSk
	}
	return &Maps{Sk: sk, ByCookie: p.objs.IpngByCookie, TupleStamps: stamps, Counters: p.objs.IpngCounters,
		Ifaces: p.objs.IpngIfaces, IfaceSlots: p.objs.IpngIfaceSlots, TagNames: p.objs.IpngTagNames, Series: p.objs.IpngSeries, Conns: p.objs.IpngConns,
		TupleRing: ring, TupleHead: head, owned: false}
}

// Close releases the program. Unless KeepOnExit is set, it detaches the
// program and removes the pins; with KeepOnExit the pins keep it attached.
func (p *Program) Close() error {
	var errs []error
	if !p.cfg.KeepOnExit {
		errs = append(errs, Detach(p.cfg.PinDir))
	} else if names, err := p.Repin(); err != nil {
		errs = append(errs, err)
	} else if len(names) > 0 {
		p.log.Warn("pins were removed while the agent ran: pinned again to leave the program attached", "pin_dir", p.cfg.PinDir, "pins", names)
	}
	if p.link != nil {
		errs = append(errs, p.link.Close())
	}
	errs = append(errs, p.objs.Close())
	switch {
	case p.cfg.KeepOnExit && !p.linkWasPinned():
		// Removed by someone else after the last check: nothing holds the
		// program once this process exits.
		p.log.Warn("sock_ops program detached: bpf.keep_on_exit is set but its pins were removed", "pin_dir", p.cfg.PinDir)
	case p.cfg.KeepOnExit:
		p.log.Info("sock_ops program left attached", "pin_dir", p.cfg.PinDir)
	default:
		p.log.Info("sock_ops program detached", "cgroup", p.cgroup)
	}
	return errors.Join(errs...)
}

// Detach removes the pinned link (detaching the program once no process holds
// it) and the pinned maps, then the pin directory if it is empty. Missing
// pins are not an error.
func Detach(pinDir string) error {
	var errs []error
	for _, name := range slices.Concat([]string{PinLink}, mapPins, stalePins, otherPins) {
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing pin: %w", err))
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		errs = append(errs, fmt.Errorf("removing pin directory: %w", err))
	}
	return errors.Join(errs...)
}
