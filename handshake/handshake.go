// Package handshake counts the stages of TCP handshakes on the interfaces
// bound to a source tag, so that a broken return path (DSR through a
// tunnel: SYNs arrive, SYN-ACKs go the wrong way or are dropped) shows
// before the HTTP counters merely stop growing.
//
// It loads the programs of bpf/handshake.c: a tc program on ingress and one
// on egress of every bound device (tcx where the kernel has it, a clsact
// qdisc filter otherwise), and a sock_ops program on the agent's cgroup
// that counts the SYN-ACKs answering the SYNs the ingress program saw. It
// follows the bindings: devices are attached when they appear, detached
// when they vanish, and re-attached under their new ifindex when they are
// re-created. Close detaches everything. Completed handshakes are the
// connections the sock_ops program counts (package connstats); this
// package only reads them for its diagnosis.
//
// The counts are added to the collector's (source tag, VIP) series at every
// snapshot (Sync), like package connstats does for connections: SYNs
// received, SYN-ACKs sent in answer, and SYN-ACKs that left through the
// bound device itself.
package handshake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/loader"
)

// PinCounts is the file name, in the agent's pin directory, of the counts
// map while the agent runs; `ipng-stats check` reads it.
const PinCounts = loader.PinHandshakeCounts

// MaxPorts bounds the ports whose handshakes are counted (the size of the
// program's port map); further listening ports are not counted, and
// PortsDropped says how many.
const MaxPorts = 1024

// DefaultPortsRescan is how often the listening ports are read again when
// no ports are configured.
const DefaultPortsRescan = 10 * time.Second

// Config selects what is counted.
type Config struct {
	// Ports are the local TCP ports whose handshakes are counted. Empty:
	// every port with a listener in the agent's network namespace, read
	// again every PortsRescan.
	Ports       []uint16
	PortsRescan time.Duration
	// Legacy forces clsact qdisc filters even where the kernel has tcx
	// (tests of the fallback).
	Legacy bool
}

// Options are what a Monitor works with.
type Options struct {
	Collector *collector.Collector
	Bindings  *bindings.Resolver
	Logger    *slog.Logger
	// Cgroup is the cgroup2 directory the SYN-ACK (sock_ops) program is
	// attached to: the one of the agent's sock_ops program.
	Cgroup string
	// PinDir, when set, is where the counts map is pinned while the
	// Monitor runs (the agent's bpf.pin_dir), for `ipng-stats check`.
	PinDir string
	// Completed returns the handshakes completed per source tag so far
	// (the sock_ops program's connections opened); nil: no diagnosis.
	Completed func() (map[string]uint64, error)
	// DiagnoseEvery is how often the agent logs a diagnosis of the last
	// interval; 0 means one minute.
	DiagnoseEvery time.Duration
}

// Monitor owns the loaded handshake programs. Its methods are safe for
// concurrent use.
type Monitor struct {
	opts    Options
	log     *slog.Logger
	objs    ipngbpf.HandshakeObjects
	sockops link.Link
	pin     string

	mu       sync.Mutex
	cfg      Config
	att      map[uint32]*attachment // by ifindex
	table    *bindings.Table        // the table att follows
	known    map[uint32]device      // every ifindex attached since its counts were last swept
	seen     map[ipngbpf.HandshakeIpngHsKey]*counted
	ports    map[uint16]bool
	dropped  uint64 // listening ports not counted (MaxPorts)
	byDevice map[devKey]*Totals
	local    map[netip.Addr]bool // the namespace's addresses, at the last scan
	notLocal uint64              // SYNs not exported: to an address that is not local
	closed   bool
}

// device is what an attached ifindex stood for.
type device struct {
	name string
	tags [bindings.FamilyIPv6 + 1]tagOf // by bindings.Family (4 and 6)
}

type tagOf struct {
	tag   string
	bound bool
}

type devKey struct{ tag, device string }

// Totals are handshake stage counts.
type Totals struct {
	SynReceived, SynackSent, SynackWrongEgress uint64
}

func (t *Totals) add(o Totals) {
	t.SynReceived += o.SynReceived
	t.SynackSent += o.SynackSent
	t.SynackWrongEgress += o.SynackWrongEgress
}

type counted struct {
	series    collector.Series
	hasSeries bool
	tag       string
	vip       netip.Addr
	dev       devKey
	skip      bool // the interface is not bound for this family
	last      Totals
}

// New loads the programs; Run attaches the tc programs to the bound devices,
// and the sock_ops program to opts.Cgroup while any device is counted.
func New(cfg Config, opts Options) (*Monitor, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PortsRescan <= 0 {
		cfg.PortsRescan = DefaultPortsRescan
	}
	if opts.DiagnoseEvery <= 0 {
		opts.DiagnoseEvery = time.Minute
	}
	m := &Monitor{opts: opts, log: opts.Logger.With("component", "handshake"), cfg: cfg,
		att: map[uint32]*attachment{}, known: map[uint32]device{},
		seen: map[ipngbpf.HandshakeIpngHsKey]*counted{}, byDevice: map[devKey]*Totals{}}
	if err := isCgroup2(opts.Cgroup); err != nil {
		return nil, err
	}
	if err := m.loadOnly(); err != nil {
		return nil, err
	}
	if opts.PinDir != "" {
		p := filepath.Join(opts.PinDir, PinCounts)
		os.Remove(p) // a previous agent's, killed before it could remove it
		if err := m.objs.IpngHsCounts.Pin(p); err != nil {
			m.log.Warn("pinning the handshake counts (ipng-stats check will not see them)", "err", err)
		} else {
			os.Chmod(p, loader.PinMapMode) // readable as the loader's maps are
			m.pin = p
		}
	}
	if err := m.setPorts(cfg); err != nil {
		m.Close()
		return nil, err
	}
	m.scanAddrs()
	return m, nil
}

// loadOnly loads the programs and maps into m.objs.
func (m *Monitor) loadOnly() error {
	spec, err := ipngbpf.LoadHandshake()
	if err != nil {
		return fmt.Errorf("handshake programs: %w", err)
	}
	netns, err := loader.NetnsCookie()
	if err != nil {
		return err
	}
	if err := spec.Variables["own_netns"].Set(netns); err != nil {
		return fmt.Errorf("handshake programs: setting own_netns: %w", err)
	}
	if err := spec.LoadAndAssign(&m.objs, nil); err != nil {
		return fmt.Errorf("loading the handshake programs: %w", err)
	}
	return nil
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Reload applies a new configuration (the ports).
func (m *Monitor) Reload(cfg Config) {
	if cfg.PortsRescan <= 0 {
		cfg.PortsRescan = DefaultPortsRescan
	}
	if err := m.setPorts(cfg); err != nil {
		m.log.Warn("handshake ports", "err", err)
	}
}

// Run follows the bindings and the listening ports until ctx is done, then
// detaches the tc programs. It follows the bindings as their table changes
// (bindings.Resolver.Changed): an idle agent is not woken to look at a
// table that did not change.
func (m *Monitor) Run(ctx context.Context) error {
	defer m.detachAll()
	changed := m.opts.Bindings.Changed()
	m.mu.Lock()
	every := m.cfg.PortsRescan
	m.mu.Unlock()
	rescan := time.NewTicker(every)
	defer rescan.Stop()
	diag := time.NewTicker(m.opts.DiagnoseEvery)
	defer diag.Stop()
	prev := m.sample()
	m.follow()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			changed = m.opts.Bindings.Changed() // before follow reads the table
			m.follow()
		case <-rescan.C:
			m.mu.Lock()
			cfg := m.cfg
			m.mu.Unlock()
			m.scanAddrs()
			if cfg.PortsRescan != every { // changed by a reload
				every = cfg.PortsRescan
				rescan.Reset(every)
			}
			if len(cfg.Ports) == 0 {
				if err := m.setPorts(cfg); err != nil {
					m.log.Warn("reading the listening ports", "err", err)
				}
			}
		case <-diag.C:
			next := m.sample()
			for _, f := range Diagnose(next.minus(prev)) {
				m.log.Warn("handshakes fail", "tag", f.Tag, "stage", f.Stage, "diagnosis", f.Message)
			}
			prev = next
		}
	}
}

// Follow attaches the tc programs to the bound devices present now. Run
// does it too, and again as the bindings change; a caller that reports
// itself ready once the devices are counted (the agent) calls it first.
func (m *Monitor) Follow() { m.follow() }

// follow attaches and detaches the tc programs as the bindings change.
func (m *Monitor) follow() {
	t := m.opts.Bindings.Table()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || t == m.table {
		return
	}
	m.table = t
	want := map[uint32]device{}
	for _, b := range t.Bound() {
		if !b.Present {
			continue
		}
		d := want[b.Ifindex]
		d.name = b.Binding.Device
		for _, fam := range []bindings.Family{bindings.FamilyIPv4, bindings.FamilyIPv6} {
			r := t.Lookup(b.Ifindex, fam)
			d.tags[fam] = tagOf{tag: r.Tag, bound: r.Bound}
		}
		want[b.Ifindex] = d
	}
	for idx, a := range m.att {
		if d, ok := want[idx]; ok && d.name == a.name {
			m.known[idx] = d
			continue
		}
		m.detach(a)
		delete(m.att, idx)
	}
	if len(want) > len(m.att) && !m.attachSockops() {
		m.table = nil // no device is counted without it; tried again when the bindings change
		return
	}
	for idx, d := range want {
		if _, ok := m.att[idx]; ok {
			continue
		}
		a, err := m.attach(idx, d.name)
		if err != nil {
			m.log.Warn("attaching the handshake programs", "device", d.name, "ifindex", idx, "err", err)
			continue
		}
		m.log.Info("counting handshakes", "device", d.name, "ifindex", idx, "mode", a.mode, "headers", a.headers)
		m.att[idx] = a
		m.known[idx] = d
	}
	m.detachSockops()
}

// isCgroup2 checks that dir is a cgroup2 directory, where the SYN-ACK
// program can be attached later.
func isCgroup2(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("the SYN-ACK program's cgroup: %w", err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("the SYN-ACK program's cgroup %s is not a cgroup2 directory", dir)
	}
	return nil
}

// attachSockops attaches the SYN-ACK (sock_ops) program to the cgroup if it
// is not attached; it reports whether it is. The program is attached only
// while a device is counted: it can count a SYN-ACK only for a SYN a tc
// program counted, and otherwise every connection of the cgroup (the host,
// by default) would pay for a program that counts nothing (~1 µs per
// connection, docs/benchmarks.md). It is attached before the first tc
// program, so that no counted SYN misses its SYN-ACK. Called with m.mu held.
func (m *Monitor) attachSockops() bool {
	if m.sockops != nil || m.opts.Cgroup == "" { // "": tests of the tc programs alone
		return true
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: m.opts.Cgroup, Attach: ebpf.AttachCGroupSockOps,
		Program: m.objs.IpngHsSockops})
	if err != nil {
		m.log.Warn("not counting TCP handshakes: attaching the SYN-ACK program failed", "cgroup", m.opts.Cgroup, "err", err)
		return false
	}
	m.sockops = l
	return true
}

// detachSockops detaches the SYN-ACK program once no device is counted.
// Called with m.mu held.
func (m *Monitor) detachSockops() {
	if len(m.att) == 0 && m.sockops != nil {
		if err := m.sockops.Close(); err != nil {
			m.log.Warn("detaching the SYN-ACK program", "err", err)
		}
		m.sockops = nil
	}
}

func (m *Monitor) detachAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for idx, a := range m.att {
		m.detach(a)
		delete(m.att, idx)
	}
	m.detachSockops()
	m.table = nil
}

// Close detaches every program and frees the maps.
func (m *Monitor) Close() error {
	m.mu.Lock()
	done := m.closed
	m.mu.Unlock()
	if done {
		return nil
	}
	m.detachAll()
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	// Sync no longer touches the maps.
	if m.pin != "" {
		os.Remove(m.pin)
	}
	return m.objs.Close()
}

// Attached lists the devices the tc programs are attached to, and how.
func (m *Monitor) Attached() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for _, a := range m.att {
		out[a.name] = a.mode
	}
	return out
}

// PortsDropped is how many listening ports were not counted at the last
// scan because MaxPorts were counted already.
func (m *Monitor) PortsDropped() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped
}

// MapFull is how many packets the programs could not count because the
// counts map was full.
func (m *Monitor) MapFull() uint64 {
	var perCPU []uint64
	if err := m.objs.IpngHsCounters.Lookup(ipngbpf.HandshakeIpngHsCounter(0), &perCPU); err != nil {
		return 0
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n
}

// setPorts writes the ports to count into the program's map.
func (m *Monitor) setPorts(cfg Config) error {
	ports := cfg.Ports
	dropped := uint64(0)
	if len(ports) == 0 {
		var err error
		if ports, err = ListeningPorts(); err != nil {
			return err
		}
	}
	ports = slices.Clone(ports)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	if len(ports) > MaxPorts {
		dropped = uint64(len(ports) - MaxPorts)
		ports = ports[:MaxPorts]
	}
	want := map[uint16]bool{}
	for _, p := range ports {
		want[p] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg = cfg
	if dropped > 0 && dropped != m.dropped {
		m.log.Warn("too many listening ports: handshakes on the highest ones are not counted", "ports", len(ports)+int(dropped), "counted", MaxPorts)
	}
	m.dropped = dropped
	for p := range m.ports {
		if !want[p] {
			m.objs.IpngHsPorts.Delete(p)
		}
	}
	one := uint8(1)
	var errs []error
	for p := range want {
		if !m.ports[p] {
			if err := m.objs.IpngHsPorts.Put(p, one); err != nil {
				errs = append(errs, fmt.Errorf("port %d: %w", p, err))
				delete(want, p)
			}
		}
	}
	m.ports = want
	return errors.Join(errs...)
}

// scanAddrs reads the addresses of the namespace's interfaces.
func (m *Monitor) scanAddrs() {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		m.log.Warn("listing the local addresses", "err", err)
		return
	}
	local := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			local[ip.Unmap()] = true
		}
	}
	m.mu.Lock()
	m.local = local
	m.mu.Unlock()
}

// NotLocal is how many SYNs were counted to addresses that are not local
// and had no series: they are in the diagnosis, not in the series.
func (m *Monitor) NotLocal() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.notLocal
}

// Sync reads the kernel counts and adds what changed since the last Sync
// to the collector's series. Counts of devices no longer attached are read
// a last time and removed from the map.
func (m *Monitor) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	counts, err := readCounts(m.objs.IpngHsCounts)
	stale := map[ipngbpf.HandshakeIpngHsKey]bool{}
	for _, c := range counts {
		e, ok := m.seen[c.key]
		if !ok {
			e = m.newCounted(c.key)
			m.seen[c.key] = e
		}
		d := Totals{sub(c.SynReceived, e.last.SynReceived), sub(c.SynackSent, e.last.SynackSent),
			sub(c.SynackWrongEgress, e.last.SynackWrongEgress)}
		e.last = c.Totals
		if _, ok := m.att[c.key.Ifindex]; !ok {
			stale[c.key] = true
		}
		if e.skip {
			continue
		}
		// A series only for a local address, or one that already has a
		// series (a VIP that went missing): SYNs to any address would
		// otherwise let a scan through the tunnel fill the series cap.
		if !e.hasSeries && (m.local[e.vip] || m.opts.Collector.HasSeries(e.tag, e.vip)) {
			e.series, _ = m.opts.Collector.SeriesFolded(e.tag, e.vip)
			e.hasSeries = true
		}
		if e.hasSeries {
			e.series.AddHandshakes(d.SynReceived, d.SynackSent, d.SynackWrongEgress)
		} else {
			m.notLocal += d.SynReceived
		}
		t := m.byDevice[e.dev]
		if t == nil {
			t = &Totals{}
			m.byDevice[e.dev] = t
		}
		t.add(d)
	}
	for k := range stale {
		m.objs.IpngHsCounts.Delete(k)
		delete(m.seen, k)
	}
	for idx := range m.known {
		if _, ok := m.att[idx]; !ok {
			delete(m.known, idx)
		}
	}
	return err
}

func (m *Monitor) newCounted(k ipngbpf.HandshakeIpngHsKey) *counted {
	fam := bindings.Family(k.Family)
	d, ok := m.known[k.Ifindex]
	if !ok || (fam != bindings.FamilyIPv4 && fam != bindings.FamilyIPv6) || !d.tags[fam].bound {
		return &counted{skip: true}
	}
	tag := d.tags[fam].tag
	return &counted{tag: tag, vip: netip.AddrFrom16(k.Vip).Unmap(), dev: devKey{tag: tag, device: d.name}}
}

func sub(now, before uint64) uint64 {
	if now < before {
		return 0
	}
	return now - before
}

type count struct {
	key ipngbpf.HandshakeIpngHsKey
	Totals
}

func readCounts(mp *ebpf.Map) ([]count, error) {
	var (
		key    ipngbpf.HandshakeIpngHsKey
		perCPU []ipngbpf.HandshakeIpngHsCount
		out    []count
	)
	it := mp.Iterate()
	for it.Next(&key, &perCPU) {
		c := count{key: key}
		for _, v := range perCPU {
			c.SynReceived += v.SynReceived
			c.SynackSent += v.SynackSent
			c.SynackWrongEgress += v.SynackWrongEgress
		}
		out = append(out, c)
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("reading the handshake counts: %w", err)
	}
	return out, nil
}

// Attach attaches the tc programs to the bound devices now, on the calling
// thread's network namespace (Run does it in a loop; benchmarks and tests
// that drive attachment themselves call this instead).
func (m *Monitor) Attach() {
	m.mu.Lock()
	m.table = nil
	m.mu.Unlock()
	m.follow()
}

// Detach detaches the tc programs from every device (Run does it when it
// returns).
func (m *Monitor) Detach() { m.detachAll() }

// TCPrograms are the ingress and egress programs of both variants (for
// their kernel statistics).
func (m *Monitor) TCPrograms() []*ebpf.Program {
	return []*ebpf.Program{m.objs.IpngHsIngress, m.objs.IpngHsEgress, m.objs.IpngHsInL3, m.objs.IpngHsOutL3}
}
