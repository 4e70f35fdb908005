package collector

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons counted by the collector itself in ipng_outcomes_rejected_total.
const (
	RejectInvalidSourceTag = "invalid_source_tag"
	RejectInvalidVIP       = "invalid_vip"
)

// Sources are the meta counters owned by other packages, pulled at scrape
// time. Each func must be safe for concurrent use and fast; nil funcs are
// skipped. Returned maps are only read.
type Sources struct {
	// IfindexMisses: address family ("ipv4", "ipv6") → accepted connections
	// whose ingress ifindex was not found. ipng_ifindex_misses_total{family}.
	IfindexMisses func() map[string]uint64
	// AttributionFallbacks: reason → connections attributed to the default
	// tag for that reason; added to AttributionFallback counts.
	// ipng_attribution_fallbacks_total{reason}.
	AttributionFallbacks func() map[string]uint64
	// BPFEvents: counter name (e.g. "stamped") → value summed over CPUs.
	// ipng_bpf_events_total{event}.
	BPFEvents func() map[string]uint64
	// Refresh, when set, runs at the start of every snapshot (each scrape),
	// before anything is read: the agent adds the kernel's connection
	// counts there.
	Refresh func()
}

// Collector owns all series and meta counters. Create it with New; it is
// safe for concurrent use. It implements prometheus.Collector.
type Collector struct {
	log    *slog.Logger
	now    func() time.Time
	start  time.Time
	build  BuildInfo
	lay    *layout
	fixed  Config // the configuration the layout was built from
	descs  *descs
	ix     *index
	limit  atomic.Int64 // MaxSeries, changeable on reload
	nReal  atomic.Int64 // non-overflow series
	folded atomic.Uint64

	mu      sync.Mutex // guards entries, nOver and sorted
	entries []*entry   // append-only, in creation order
	nOver   int        // per-tag overflow series
	sorted  []*entry   // entries sorted for exposition; rebuilt when stale

	rejects   *reasonSet
	fallbacks *reasonSet
	sinks     map[string]*shard // rejecting handles by reason
	sources   atomic.Pointer[Sources]
	rateMu    sync.Mutex // serialises rate ticks
	lastTick  time.Time

	// batch is held for writing by BeginBatch and for reading by Snapshot.
	batch sync.RWMutex
}

// New returns a Collector for cfg. Zero Config fields take their defaults.
func New(cfg Config, opts Options) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("collector config: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Collector{
		log:       opts.Logger,
		now:       opts.Now,
		build:     opts.Build,
		lay:       newLayout(cfg),
		fixed:     cfg,
		descs:     newDescs(),
		ix:        newIndex(),
		rejects:   newReasonSet(append([]string{RejectInvalidSourceTag, RejectInvalidVIP}, opts.RejectReasons...)...),
		fallbacks: newReasonSet(opts.FallbackReasons...),
		sinks:     make(map[string]*shard),
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c.log = c.log.With("component", "collector")
	if c.now == nil {
		c.now = time.Now
	}
	if c.build.GoVersion == "" {
		c.build.GoVersion = runtime.Version()
	}
	c.start = c.now()
	c.lastTick = c.start
	c.limit.Store(int64(cfg.MaxSeries))
	for _, r := range []string{RejectInvalidSourceTag, RejectInvalidVIP} {
		c.sinks[r] = &shard{reject: c.rejects.counter(r)}
	}
	c.sources.Store(&Sources{})
	return c, nil
}

// SetConfig applies a reloaded configuration. Counters are never reset.
// MaxSeries takes effect at once (lowering it keeps existing series and folds
// only new pairs); changed bucket bounds, native histograms or shards are
// ignored with a warning until the process restarts.
func (c *Collector) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("collector config: %w", err)
	}
	cfg = cfg.withDefaults()
	if d := fixedFieldsDiffer(c.fixed, cfg); len(d) > 0 {
		c.log.Warn("configuration change needs a restart to take effect; keeping the running values",
			"fields", strings.Join(d, ", "))
	}
	if old := c.limit.Swap(int64(cfg.MaxSeries)); old != int64(cfg.MaxSeries) {
		c.log.Info("series cap changed", "old", old, "new", cfg.MaxSeries, "series", c.nReal.Load())
	}
	return nil
}

// BeginBatch makes snapshots (every scrape) wait until EndBatch. A writer
// calls it around records that must become visible together with a side
// effect outside the process: the nginx ingest records a batch of log lines
// and frees them in the spool before EndBatch, so that no scrape can see a
// batch the spool still holds (an agent killed in between would count it
// again after its restart). Records themselves never wait. Keep batches
// short: a scrape waits for the whole batch.
func (c *Collector) BeginBatch() { c.batch.Lock() }

// EndBatch ends the batch begun by BeginBatch.
func (c *Collector) EndBatch() { c.batch.Unlock() }

// SetSources installs the pull hooks for meta counters owned by other
// packages. It may be called at any time; it replaces earlier hooks.
func (c *Collector) SetSources(s Sources) { c.sources.Store(&s) }

// Series returns the handle for (tag, vip), creating the series if needed.
// vip is the local address of the accepted connection; IPv4-mapped IPv6
// addresses are recorded as IPv4 and zones are dropped. Call it once per
// connection (each call picks the next shard) and keep the handle.
//
// A tag that is not a valid source tag, or an invalid vip, yields a handle
// whose Record counts ipng_outcomes_rejected_total{reason=...}. Once the
// series cap is reached, new pairs get the (tag, "other") overflow series
// and ipng_series_overflow_total rises.
func (c *Collector) Series(tag string, vip netip.Addr) Series {
	s, folded := c.SeriesFolded(tag, vip)
	if folded {
		c.folded.Add(1)
	}
	return s
}

// SeriesCountedElsewhere is Series for a connection that another source
// counts too (the agent counts the connections the sock_ops program
// stamped, and the proxy records their requests): a fold into an overflow
// series is left to that source, so that ipng_series_overflow_total rises
// once per connection.
func (c *Collector) SeriesCountedElsewhere(tag string, vip netip.Addr) Series {
	s, _ := c.SeriesFolded(tag, vip)
	return s
}

// SeriesFolded is Series without counting a fold: it also says whether the
// handle is the (tag, "other") overflow series. A source that adds
// connections in bulk (the kernel's per-(tag, VIP) counts) counts each
// connection it adds to an overflow series with CountFolds.
func (c *Collector) SeriesFolded(tag string, vip netip.Addr) (s Series, folded bool) {
	if !vip.IsValid() {
		return Series{sh: c.sinks[RejectInvalidVIP]}, false
	}
	k := seriesKey{tag: tag, addr: vip.Unmap().WithZone("")}
	if e, ok := c.ix.load(k); ok {
		return e.handle(), false
	}
	if !ValidSourceTag(tag) {
		return Series{sh: c.sinks[RejectInvalidSourceTag]}, false
	}
	if c.nReal.Load() < c.limit.Load() {
		e := c.ix.loadOrCreate(k, func() *entry {
			if !c.reserve() {
				return nil
			}
			return c.add(newEntry(c.lay, c.fixed, tag, k.addr))
		})
		if e != nil {
			return e.handle(), false
		}
	}
	return c.overflow(tag).handle(), true
}

// HasSeries reports whether the (tag, vip) series exists, without creating
// it.
func (c *Collector) HasSeries(tag string, vip netip.Addr) bool {
	_, ok := c.ix.load(seriesKey{tag: tag, addr: vip.Unmap().WithZone("")})
	return ok
}

// CountFolds adds n to ipng_series_overflow_total: connections added to a
// handle that SeriesFolded reported folded.
func (c *Collector) CountFolds(n uint64) { c.folded.Add(n) }

// Record is Series(tag, vip).Record(o) for sources that do not keep handles
// (it costs a map lookup under a read lock).
func (c *Collector) Record(tag string, vip netip.Addr, o Outcome) {
	c.Series(tag, vip).Record(o)
}

// overflow returns the (tag, "other") series, or the (other, other) series
// once maxOverflowTags per-tag overflow series exist.
func (c *Collector) overflow(tag string) *entry {
	k := seriesKey{tag: tag}
	if e, ok := c.ix.load(k); ok {
		return e
	}
	e := c.ix.loadOrCreate(k, func() *entry {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.nOver >= maxOverflowTags && tag != OverflowTag {
			return nil
		}
		c.nOver++
		e := newEntry(c.lay, c.fixed, tag, netip.Addr{})
		c.entries = append(c.entries, e)
		return e
	})
	if e == nil {
		return c.overflow(OverflowTag)
	}
	return e
}

// reserve takes one of the MaxSeries slots, or reports that none is left.
func (c *Collector) reserve() bool {
	for {
		n := c.nReal.Load()
		if n >= c.limit.Load() {
			return false
		}
		if c.nReal.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (c *Collector) add(e *entry) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, e)
	return e
}

// RejectOutcome counts an outcome a source could not record, by reason
// (e.g. "parse_error"). At most 64 distinct reasons are kept; further ones
// are counted as "other".
func (c *Collector) RejectOutcome(reason string) { c.rejects.counter(reason).Add(1) }

// AttributionFallback counts a connection attributed to the default tag, by
// reason; the counts are added to those of Sources.AttributionFallbacks.
func (c *Collector) AttributionFallback(reason string) { c.fallbacks.counter(reason).Add(1) }

// ValidSourceTag reports whether s is a valid source tag: 1 to 63
// characters of [A-Za-z0-9_.:-], starting with a letter or digit.
func ValidSourceTag(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case i > 0 && (ch == '_' || ch == '.' || ch == ':' || ch == '-'):
		default:
			return false
		}
	}
	return true
}
