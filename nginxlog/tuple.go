package nginxlog

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
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

// tupleLookup looks 4-tuples up in ipng_by_tuple and caches what it found
// per nginx connection. Lines queue their 4-tuples (queue), one bpf(2) call
// looks up a whole batch (run, loader.TupleBatch), and resolve reads each
// answer; without the batch program (an old kernel, no CAP_BPF) every line
// costs a BPF_MAP_LOOKUP_ELEM (loader.Maps.LookupTuple). It is used by the
// ingest goroutine only, and does not allocate.
type tupleLookup struct {
	maps    *loader.Maps
	netns   uint64
	cache   []connEntry // by nginx connection serial, see cached
	names   func(uint32) (string, bool)
	devices map[loader.Device]string
	// batch is nil when the batch program could not be loaded (batchErr
	// says why) or failed; then lookups are one system call each.
	batch    *loader.TupleBatch
	batchErr error
	looked   bool // the queued batch was looked up
	// hist tells evicted from never-seen 4-tuples; nil with pins of a
	// version without the ring (then every miss is never seen).
	hist *loader.TupleHistory
}

func newTupleLookup(m *loader.Maps, netns uint64) *tupleLookup {
	hist, _ := m.TupleHistory()
	t := &tupleLookup{maps: m, netns: netns, hist: hist, cache: make([]connEntry, connCacheSize),
		devices: map[loader.Device]string{}}
	t.batch, t.batchErr = m.NewTupleBatch()
	return t
}

// connCacheSize is the number of entries of the connection cache (a power
// of two).
const connCacheSize = 4096

// maxDevices bounds the cache of device names.
const maxDevices = 4096

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

// cached returns what the connection cache knows about r's connection.
func (t *tupleLookup) cached(r *Record) (connInfo, bool) {
	if r.Conn == 0 {
		return connInfo{}, false
	}
	e := &t.cache[r.Conn&(connCacheSize-1)]
	if e.conn == r.Conn && e.local == r.Local && e.remote == r.Remote {
		return e.connInfo, true
	}
	return connInfo{}, false
}

// queue adds r's 4-tuple to the batch and returns its slot, or -1 without
// the batch program (resolve then looks it up alone).
func (t *tupleLookup) queue(r *Record) int {
	if t.batch == nil {
		return -1
	}
	return t.batch.Add(t.netns, r.Local, r.Remote)
}

// run looks the queued 4-tuples up. On an error the batch program is
// dropped: resolve looks the queued lines up one at a time, and so do the
// lines after them.
func (t *tupleLookup) run() error {
	if t.batch == nil || t.batch.Len() == 0 {
		return nil
	}
	if err := t.batch.Lookup(); err != nil {
		t.batch.Close()
		t.batch, t.batchErr = nil, err
		return err
	}
	t.looked = true
	return nil
}

// reset empties the batch after its lines were resolved.
func (t *tupleLookup) reset() {
	if t.batch != nil {
		t.batch.Reset()
	}
	t.looked = false
}

// close releases the batch program.
func (t *tupleLookup) close() {
	if t != nil && t.batch != nil {
		t.batch.Close()
		t.batch = nil
	}
}

// resolve returns what the stamp of r's connection says, or why there is
// none: from slot of the batch that run looked up, or with a lookup of its
// own (slot -1, or the batch failed).
func (t *tupleLookup) resolve(r *Record, slot int) (connInfo, string) {
	var (
		st    loader.Stamp
		found bool
	)
	if slot >= 0 && t.looked {
		found = t.batch.Stamp(slot, &st)
	} else {
		var err error
		if st, found, err = t.maps.LookupTuple(t.netns, r.Local, r.Remote); err != nil {
			return connInfo{}, ReasonLookupError
		}
	}
	if !found {
		return connInfo{}, t.missReason(r)
	}
	c := connInfo{ifindex: st.Ifindex, fam: st.Family, bound: st.Bound}
	if st.TagID != 0 && t.names != nil {
		if tag, ok := t.names(st.TagID); ok {
			c.tag, c.device = tag, t.device(&st.Device)
		}
	}
	if r.Conn != 0 {
		t.cache[r.Conn&(connCacheSize-1)] = connEntry{conn: r.Conn, local: r.Local, remote: r.Remote, connInfo: c}
	}
	return c, ""
}

// device is the stamp's device name; it allocates only for a name not seen
// before.
func (t *tupleLookup) device(d *loader.Device) string {
	if s, ok := t.devices[*d]; ok {
		return s
	}
	if len(t.devices) >= maxDevices {
		clear(t.devices)
	}
	s := d.String()
	t.devices[*d] = s
	return s
}

// missReason says why r's 4-tuple is not in the map: the program stamped
// it (evicted) or not (never seen), from the ring of stamped 4-tuples.
func (t *tupleLookup) missReason(r *Record) string {
	if t.hist == nil {
		return ReasonNeverSeen
	}
	stamped, err := t.hist.Stamped(t.netns, r.Local, r.Remote)
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
