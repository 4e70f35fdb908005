package nginxlog

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/loader"
)

// Reasons a line falls back to the default tag
// (ipng_attribution_fallbacks_total{reason}).
const (
	// ReasonNeverSeen: the 4-tuple is not in ipng_by_tuple and the program
	// did not stamp it among its last stamps (the ring of stamped 4-tuples,
	// loader.TupleRingFactor times the map's size): the connection was not
	// stamped (nginx outside the attached cgroup, another network namespace,
	// accepted before the program was attached).
	ReasonNeverSeen = "nginx_tuple_never_seen"
	// ReasonEvicted: not found, and the ring of stamped 4-tuples says the
	// program stamped it: the LRU map evicted it before its line was read.
	ReasonEvicted = "nginx_tuple_evicted"
	// ReasonNoBPF: the agent runs without the BPF program.
	ReasonNoBPF = "nginx_bpf_unavailable"
	// ReasonLookupError: the map lookup failed.
	ReasonLookupError = "nginx_lookup_error"
)

// tupleLookup looks 4-tuples up in ipng_by_tuple without allocating: the key
// and value live in this (heap) struct and are handed to cilium/ebpf as
// unsafe.Pointers. It is used by the ingest goroutine only.
type tupleLookup struct {
	m       *ebpf.Map
	netns   uint64
	key     ipngbpf.SockopsIpngTuple
	stamp   ipngbpf.SockopsIpngStamp
	cache   []connEntry // by nginx connection serial, see lookup
	names   func(uint32) (string, bool)
	lastDev string
	// hist tells evicted from never-seen 4-tuples; nil with pins of a
	// version without the ring (then every miss is never seen).
	hist *loader.TupleHistory
}

func newTupleLookup(m *loader.Maps, netns uint64) *tupleLookup {
	hist, _ := m.TupleHistory()
	return &tupleLookup{m: m.ByTuple, netns: netns, hist: hist, cache: make([]connEntry, connCacheSize)}
}

// connCacheSize is the number of entries of the connection cache (a power
// of two).
const connCacheSize = 4096

// connEntry remembers the interface of one connection: nginx's $connection
// serial number and the 4-tuple. Requests on a kept-alive connection then
// cost no map lookup. The serial is unique among the connections of one
// nginx master, so together with the 4-tuple an entry cannot match another
// connection (nginx's restart resets serials, but the same serial would
// also need the same 4-tuple).
type connEntry struct {
	conn          uint64
	local, remote netip.AddrPort
	connInfo
}

// connInfo is what the stamp says about a connection: the tag and device
// of its interface at accept (tag "" when the program did not know them),
// and the ifindex.
type connInfo struct {
	tag, device string
	bound       bool
	ifindex     uint32
	fam         bindings.Family
}

// lookup returns what the stamp of r's connection says, or why there is none.
func (t *tupleLookup) lookup(r *Record) (connInfo, string) {
	var e *connEntry
	if r.Conn != 0 {
		e = &t.cache[r.Conn&(connCacheSize-1)]
		if e.conn == r.Conn && e.local == r.Local && e.remote == r.Remote {
			return e.connInfo, ""
		}
	}
	t.key = loader.TupleKey(t.netns, r.Local, r.Remote)
	err := t.m.Lookup(unsafe.Pointer(&t.key), unsafe.Pointer(&t.stamp))
	switch {
	case err == nil:
		c := connInfo{ifindex: t.stamp.Ifindex, fam: bindings.Family(t.stamp.Family), bound: t.stamp.Bound != 0}
		if t.stamp.TagId != 0 && t.names != nil {
			if tag, ok := t.names(t.stamp.TagId); ok {
				c.tag, c.device = tag, t.device()
			}
		}
		if e != nil {
			*e = connEntry{conn: r.Conn, local: r.Local, remote: r.Remote, connInfo: c}
		}
		return c, ""
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		return connInfo{}, ReasonLookupError
	}
	return connInfo{}, t.missReason()
}

// device is the stamp's device name; it allocates only when the name
// differs from the last one.
func (t *tupleLookup) device() string {
	n := 0
	for n < len(t.stamp.Device) && t.stamp.Device[n] != 0 {
		n++
	}
	if n == len(t.lastDev) {
		same := true
		for i := range n {
			if byte(t.stamp.Device[i]) != t.lastDev[i] {
				same = false
				break
			}
		}
		if same {
			return t.lastDev
		}
	}
	b := make([]byte, n)
	for i := range n {
		b[i] = byte(t.stamp.Device[i])
	}
	t.lastDev = string(b)
	return t.lastDev
}

// missReason says why t.key is not in the map: the program stamped it
// (evicted) or not (never seen), from the ring of stamped 4-tuples.
func (t *tupleLookup) missReason() string {
	if t.hist == nil {
		return ReasonNeverSeen
	}
	stamped, err := t.hist.Stamped(&t.key)
	switch {
	case err != nil:
		return ReasonLookupError
	case stamped:
		return ReasonEvicted
	}
	return ReasonNeverSeen
}

// netnsCookie returns the cookie of the network namespace at path, or of
// the caller's when path is empty.
func netnsCookie(path string) (uint64, error) {
	if path == "" {
		return loader.NetnsCookie()
	}
	target, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("opening network namespace: %w", err)
	}
	defer target.Close()
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("opening own network namespace: %w", err)
	}
	defer self.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("entering network namespace %s: %w", path, err)
	}
	cookie, cerr := loader.NetnsCookie()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and dies with the goroutine.
		return 0, fmt.Errorf("returning from network namespace %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return cookie, cerr
}

// onTmpfs reports whether dir is on tmpfs.
func onTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}
