package nginxlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/logtail"
)

// Deps are what the agent hands the ingest.
type Deps struct {
	Collector *collector.Collector // required
	Bindings  *bindings.Resolver   // required
	Maps      *loader.Maps         // nil when the BPF program is unavailable
	// TagNames names the tag ids the program stamps at accept
	// (loader.TagTable.Name, or loader.Maps.PinnedTagNames in a process
	// that reads the pins); nil: lines resolve their ifindex with the
	// current bindings instead. Called from the ingest goroutine only.
	TagNames func(uint32) (string, bool)
	Logger   *slog.Logger // nil discards
}

// Ingest consumes one nginx access log. Create it with New, run it with Run;
// Reload and the prometheus.Collector methods may be called concurrently.
type Ingest struct {
	log    *slog.Logger
	coll   *collector.Collector
	tags   *bindings.Resolver
	tuples *tupleLookup // nil without BPF
	sp     *spool
	dir    string

	cfgMu sync.Mutex
	cfg   config.NginxConfig
	poll  atomic.Int64 // poll interval in ns
	tail  atomic.Pointer[logtail.Sender]
	// tailCounters outlive a Sender replaced by Reload; tailLine is the
	// ingest goroutine's buffer for the enriched line.
	tailCounters logtail.Counters
	tailLine     []byte
	tailMetrics  *logtail.Metrics

	queue  []queued // lines read, waiting for flush
	series map[seriesKey]collector.Series

	st    stats
	descs *descs
	full  bool // the spool was full at the last check (edge detection)
	loss  lossEstimator
	ready atomic.Bool
	polls atomic.Uint64 // reads of the spool, for tests of the idle ingest
}

type seriesKey struct {
	tag string
	vip netip.Addr
}

// maxCachedSeries bounds the handle cache; the collector caps series itself.
const maxCachedSeries = 16384

// stats are the ingest's own counters (ipng_nginx_*).
type stats struct {
	lines, bytes, recorded, rejected   atomic.Uint64
	misses, spoolFull, reopens, truncs atomic.Uint64
	backlog                            atomic.Int64
}

// New validates cfg (zero values take the defaults of config.NginxConfig),
// resolves the network namespace cookie of nginx and prepares the spool
// directory. It does not read anything until Run.
func New(cfg config.NginxConfig, deps Deps) (*Ingest, error) {
	if deps.Collector == nil || deps.Bindings == nil {
		return nil, errors.New("nginx ingest: collector and bindings resolver are required")
	}
	cfg = cfg.WithDefaults()
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	in := &Ingest{
		log:    log.With("component", "nginx"),
		coll:   deps.Collector,
		tags:   deps.Bindings,
		cfg:    cfg,
		dir:    filepath.Dir(cfg.LogFile),
		series: make(map[seriesKey]collector.Series),
		queue:  make([]queued, 0, maxQueued),
		descs:  newDescs(),
	}
	in.tailMetrics = logtail.NewMetrics("nginx", &in.tailCounters)
	in.poll.Store(int64(cfg.PollInterval))
	if deps.Maps != nil && deps.Maps.TupleStamps != nil {
		cookie, err := netnsCookie(cfg.Netns)
		if err != nil {
			return nil, fmt.Errorf("nginx ingest: %w", err)
		}
		if in.tuples, err = newTupleLookup(deps.Maps, cookie); err != nil {
			return nil, fmt.Errorf("nginx ingest: %w", err)
		}
		in.tuples.names = deps.TagNames
	}
	if err := os.MkdirAll(in.dir, SpoolDirMode); err != nil {
		return nil, fmt.Errorf("nginx ingest: creating spool directory: %w", err)
	}
	if err := createSpoolFile(cfg.LogFile); err != nil {
		in.log.Warn("cannot create the spool file; nginx creates it with its own mode", "file", cfg.LogFile, "err", err)
	}
	if !onTmpfs(in.dir) {
		in.log.Warn("spool directory is not on tmpfs; use a dedicated, size-limited tmpfs (see `ipng-stats nginx-snippet`)", "dir", in.dir)
	}
	if cfg.Logtail.Target != "" {
		lt, err := in.newLogtail(cfg.Logtail)
		if err != nil {
			return nil, fmt.Errorf("nginx ingest: %w", err)
		}
		in.tail.Store(lt)
	}
	in.sp = newSpool(cfg.LogFile, cfg.MaxLineBytes, in.line, in.tooLong)
	in.sp.onRead = in.flush
	in.sp.onNarrow = in.narrowed
	if os.Getenv(FaultEnv) == FaultBeforeFree {
		in.sp.beforeFree = in.faultBeforeFree
	}
	return in, nil
}

// SpoolDirMode and SpoolFileMode are the modes of the spool directory and
// file when the agent creates them (docs/reliability.md, "Pin and spool
// file modes"). nginx's workers reopen the file by its path after a
// rotation (nginx -s reopen), so the directory must be searchable by them;
// nothing but nginx and the agent opens the file: it holds the clients'
// addresses. The shipped tmpfs (run-ipng\x2dstats-nginx.mount) is narrower
// still: mode 0710 with nginx's group, so no other user reaches the file
// whatever its mode.
const (
	SpoolDirMode  os.FileMode = 0o711
	SpoolFileMode os.FileMode = 0o600
)

// createSpoolFile creates the log file with SpoolFileMode when it does not
// exist, before nginx does: nginx opens an existing file as it is, and its
// master only hands it to the worker user on reopen (chown, and u+rw),
// never widening the mode. A file nginx made first (0644 under the usual
// umask), before the agent ran or at a rename-style rotation, is narrowed
// when the spool opens it (narrowSpoolFile).
func createSpoolFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, SpoolFileMode)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// narrowed logs a spool file whose mode was narrowed when the ingest took it
// over, or could not be.
func (in *Ingest) narrowed(path string, from, to os.FileMode, err error) {
	if err != nil {
		in.log.Warn("spool file is readable by others and cannot be narrowed (the agent needs CAP_FOWNER for a file that is nginx's)", "file", path, "mode", fmt.Sprintf("%04o", from), "err", err)
		return
	}
	in.log.Info("spool file narrowed to its owner", "file", path, "from", fmt.Sprintf("%04o", from), "to", fmt.Sprintf("%04o", to))
}

// FaultEnv is the environment variable of the ingest's fault point, a debug
// hook for tests (docs/reliability.md): with IPNG_STATS_FAULT=
// nginx-before-free the ingest stops for good in the middle of its first
// batch that records a line: after recording the batch, before freeing it
// in the spool, with scrapes held (the window an agent killed there leaves).
// It logs "fault point reached" at warning level; the test then scrapes and
// kills the agent. Never set it in production: the ingest (and every scrape)
// stops.
const FaultEnv = "IPNG_STATS_FAULT"

// FaultBeforeFree is the value of FaultEnv that arms the fault point.
const FaultBeforeFree = "nginx-before-free"

func (in *Ingest) faultBeforeFree() {
	in.log.Warn("fault point reached: stopped after recording a batch, before freeing it", "fault", FaultBeforeFree, "lines", in.st.lines.Load())
	select {}
}

// RejectReasons are the ipng_outcomes_rejected_total reasons the ingest
// uses; pass them in collector.Options.RejectReasons.
func RejectReasons() []string {
	out := make([]string, 0, numProblems-1)
	for p := Malformed; p < numProblems; p++ {
		out = append(out, p.Reason())
	}
	return out
}

// FallbackReasons are the ipng_attribution_fallbacks_total reasons the
// ingest uses; pass them in collector.Options.FallbackReasons.
func FallbackReasons() []string {
	return []string{ReasonNeverSeen, ReasonEvicted, ReasonNoBPF, ReasonLookupError}
}

// Run consumes the log until ctx is done, then reads what is left, frees
// what it has read and returns nil. It returns an error only if the log file
// cannot be read.
func (in *Ingest) Run(ctx context.Context) error {
	in.log.Info("consuming nginx access log", "file", in.sp.path, "bpf", in.tuples != nil)
	defer func() {
		if t := in.tail.Swap(nil); t != nil {
			t.Close()
		}
	}()
	defer in.sp.close()
	defer in.tuples.close()
	in.ready.Store(true)
	watch, err := newSpoolWatch(in.dir)
	if err != nil {
		in.log.Warn("cannot watch the spool directory; looking every poll_interval instead", "dir", in.dir, "err", err)
	} else {
		defer watch.close()
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	sleep := func(d time.Duration) {
		if d <= 0 || ctx.Err() != nil {
			return
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	var lastMaint time.Time
	for {
		in.checkFull() // before reading frees anything
		read := time.Now()
		in.polls.Add(1)
		n, err := in.pollBatch()
		if err != nil {
			return fmt.Errorf("nginx ingest: %w", err)
		}
		if now := time.Now(); n == 0 || now.Sub(lastMaint) > time.Second {
			lastMaint = now
			in.maintain()
		}
		if n == 0 {
			// Everything is read. Sleep until nginx writes (or at most
			// idleWake), then read no sooner than poll_interval after
			// this read: under load the reads come in batches, never
			// one per nginx write.
			poll := time.Duration(in.poll.Load())
			if watch != nil {
				watch.wait(ctx, idleWake)
				poll -= time.Since(read)
			}
			sleep(poll)
		}
		if ctx.Err() != nil {
			return in.drain()
		}
	}
}

// pollBatch reads what is new in the spool as one batch of the collector: the
// lines are recorded and freed in the spool before any scrape can see them
// (collector.BeginBatch).
func (in *Ingest) pollBatch() (int, error) {
	in.coll.BeginBatch()
	defer in.coll.EndBatch()
	return in.sp.poll()
}

// drain reads to the end of the log (bounded) before stopping.
func (in *Ingest) drain() error {
	for range 10000 {
		n, err := in.pollBatch()
		if err != nil {
			return fmt.Errorf("nginx ingest: %w", err)
		}
		if n == 0 {
			break
		}
	}
	in.log.Info("stopped consuming nginx access log", "lines", in.st.lines.Load())
	return nil
}

// maintain runs between batches: it frees what was read and refreshes the
// backlog.
func (in *Ingest) maintain() {
	// Look for a full spool before freeing: after a pause (SIGSTOP, a slow
	// host) this is the first chance, and freeing would hide it.
	in.checkFull()
	for _, f := range []*spoolFile{in.sp.cur, in.sp.old} {
		if f != nil {
			in.sp.free(f, true)
		}
	}
	in.st.reopens.Store(in.sp.reopens)
	in.st.truncs.Store(in.sp.truncs)
	in.st.backlog.Store(in.sp.backlog())
}

// fullBelow is the free space under which nginx's next buffer write (up to
// 64 KiB) may fail.
const fullBelow = 128 << 10

// checkFull counts the times the spool filesystem is found full; nginx
// loses the lines it cannot write (and logs each failed write).
func (in *Ingest) checkFull() {
	full := spoolFull(in.dir, fullBelow)
	if full && !in.full {
		in.st.spoolFull.Add(1)
		in.log.Warn("spool filesystem is full: nginx cannot write access-log lines, they are lost (nginx logs each failed write); give the tmpfs more room", "dir", in.dir)
	}
	if in.full && !full {
		in.log.Warn("spool filesystem has room again", "dir", in.dir)
	}
	in.full = full
	backlog := in.st.backlog.Load()
	if full || in.loss.ep.open {
		backlog = in.sp.backlog() // the estimate needs it as of now
	}
	open, lost, noMsec := in.loss.ep.open, in.loss.lost.Load(), in.loss.noMsec.Load()
	in.loss.observe(time.Now(), full, backlog)
	switch {
	case in.loss.noMsec.Load() != noMsec:
		in.log.Warn("cannot estimate the lines lost while the spool was full: its lines have no $msec (use the log_format of `ipng-stats nginx-snippet`)", "dir", in.dir)
	case open && !in.loss.ep.open:
		now := in.loss.lost.Load()
		in.log.Warn("access-log lines lost while the spool was full, estimated", "dir", in.dir, "lines", now-lost, "lines_lost_estimated_total", now)
	}
}

// Reload applies a new configuration: poll_interval and logtail take effect
// at once; log_file, netns and max_line_bytes need a restart (a warning says
// so).
func (in *Ingest) Reload(cfg config.NginxConfig) error {
	cfg = cfg.WithDefaults()
	in.cfgMu.Lock()
	defer in.cfgMu.Unlock()
	old := in.cfg
	if cfg.LogFile != old.LogFile || cfg.Netns != old.Netns || cfg.MaxLineBytes != old.MaxLineBytes {
		in.log.Warn("nginx.log_file, nginx.netns and nginx.max_line_bytes change only on restart; keeping the running values")
		cfg.LogFile, cfg.Netns, cfg.MaxLineBytes = old.LogFile, old.Netns, old.MaxLineBytes
	}
	in.poll.Store(int64(cfg.PollInterval))
	if cfg.Logtail != old.Logtail {
		var lt *logtail.Sender
		if cfg.Logtail.Target != "" {
			var err error
			if lt, err = in.newLogtail(cfg.Logtail); err != nil {
				return fmt.Errorf("nginx ingest: %w", err)
			}
		}
		if prev := in.tail.Swap(lt); prev != nil {
			prev.Close()
		}
	}
	in.cfg = cfg
	return nil
}

// queued is a line read but not yet recorded: lines are parsed as they are
// read, and recorded in batches after one read of the ring of stamps
// (flush). Its byte slices alias the spool's buffer, which holds still
// until the read that filled it returns.
type queued struct {
	rec   Record
	line  []byte  // the (recovered) line, for the logtail
	size  int     // bytes of the line as read, newline included
	prob  Problem // OK, or why the whole line is rejected
	torn  bool    // a torn fragment before the line was cut off
	info  connInfo
	known bool // info came from the connection cache
}

// maxQueued bounds the lines waiting for a flush.
const maxQueued = 256

// line parses one access-log line and queues it; flush records it. Free of
// allocations.
func (in *Ingest) line(b []byte) {
	if len(in.queue) == maxQueued {
		in.flush()
	}
	in.queue = in.queue[:len(in.queue)+1]
	q := &in.queue[len(in.queue)-1]
	q.size, q.torn, q.known = len(b)+1, false, false
	r := &q.rec
	if p := Parse(b, r); p != OK {
		i := Recover(b, r)
		if i == 0 {
			q.prob, q.line = p, nil
			return
		}
		q.torn = true // the fragment is rejected; the line after it counts
		b = b[i:]
	}
	q.prob, q.line = OK, b
	if in.tuples != nil {
		q.info, q.known = in.tuples.cached(r)
	}
}

// tooLong queues a line longer than max_line_bytes, rejected.
func (in *Ingest) tooLong() {
	if len(in.queue) == maxQueued {
		in.flush()
	}
	in.queue = in.queue[:len(in.queue)+1]
	q := &in.queue[len(in.queue)-1]
	q.size, q.prob, q.line, q.torn, q.known = 0, TooLong, nil, false, false
}

// flush indexes the stamps written since the last flush (one bpf(2) call) and
// records the lines in the order they were read. The ingest's own counters
// move after the collector's, so that a reader of Stats then of the
// collector never sees them ahead.
func (in *Ingest) flush() {
	if len(in.queue) == 0 {
		return
	}
	if in.tuples != nil {
		if err := in.tuples.sync(); err != nil {
			in.log.Warn("reading the ring of 4-tuple stamps failed", "err", err)
		}
	}
	tail := in.tail.Load()
	var lines, bytes, recorded, rejected uint64
	for i := range in.queue {
		q := &in.queue[i]
		lines++
		bytes += uint64(q.size)
		if q.prob != OK {
			in.loss.line(0, q.size)
			in.coll.RejectOutcome(q.prob.Reason())
			rejected++
			continue
		}
		in.loss.line(q.rec.Msec, q.size)
		if q.torn {
			in.coll.RejectOutcome(Torn.Reason())
			rejected++
		}
		r := &q.rec
		tag, device := in.attribute(q)
		vip := r.Local.Addr().Unmap()
		k := seriesKey{tag, vip}
		s, ok := in.series[k]
		if !ok {
			if len(in.series) >= maxCachedSeries {
				clear(in.series)
			}
			s = in.coll.Series(tag, vip)
			in.series[k] = s
		}
		s.Record(collector.Outcome{Status: r.Status, RequestBytes: r.RequestBytes, ResponseBytes: r.ResponseBytes, Duration: r.RequestTime})
		recorded++
		if tail != nil {
			in.tailLine = enrich(in.tailLine[:0], q.line, tag, device)
			tail.Send(in.tailLine)
		}
	}
	in.queue = in.queue[:0]
	in.st.recorded.Add(recorded)
	in.st.rejected.Add(rejected)
	in.st.bytes.Add(bytes)
	in.st.lines.Add(lines)
}

// newLogtail starts a sender of one line per datagram, counting into the
// ingest's counters.
func (in *Ingest) newLogtail(cfg config.NginxLogtailConfig) (*logtail.Sender, error) {
	return logtail.New(logtail.Options{Target: cfg.Target, Queue: cfg.Buffer, Counters: &in.tailCounters, Logger: in.log})
}

// enrich appends `{"source_tag":"<tag>","device":"<device>",` and the rest
// of line after its opening brace to b. Tags and device names need no
// escaping.
func enrich(b, line []byte, tag, device string) []byte {
	b = append(b, `{"source_tag":"`...)
	b = append(b, tag...)
	b = append(b, `","device":"`...)
	b = append(b, device...)
	b = append(b, `",`...)
	return append(b, line[1:]...)
}

// attribute finds the source tag and device of q's connection.
func (in *Ingest) attribute(q *queued) (tag, device string) {
	reason := ReasonNoBPF
	if in.tuples != nil {
		c, why := q.info, ""
		if !q.known {
			c, why = in.tuples.resolve(&q.rec)
		}
		if why == "" {
			if c.tag != "" { // the tag of the interface when the connection was accepted
				if !c.bound {
					in.tags.CountMisses(c.fam, 1)
				}
				return c.tag, c.device
			}
			res := in.tags.Lookup(c.ifindex, c.fam)
			return res.Tag, res.Device
		}
		reason = why
	}
	in.st.misses.Add(1)
	in.coll.AttributionFallback(reason)
	return in.tags.Table().DefaultTag(), ""
}

// Ready reports whether Run has started consuming.
func (in *Ingest) Ready() bool { return in.ready.Load() }
