package nginxlog

import (
	"math"
	"sync/atomic"
	"time"
)

// Parameters of the loss estimate (docs/metrics.md,
// ipng_nginx_lines_lost_estimated_total).
const (
	// lossBin is the width of the bins of nginx's write times ($msec of the
	// lines read) from which the rate before a fill is measured.
	lossBin = 10 // ms
	// The rate before the fill is measured over the shortest window ending
	// at the newest line written before the fill that is at least
	// lossRateMin long and holds lossRateLines lines, or lossRateWindow.
	lossRateMin    = time.Second
	lossRateLines  = 1000
	lossRateWindow = 10 * time.Second
	lossBins       = int(lossRateWindow / (lossBin * time.Millisecond))
	// lossSettle is how long after the spool has room again the episode
	// stays open: nginx writes what its buffers held (flush=1s in the
	// shipped access_log) and those lines are not lost.
	lossSettle = 2 * time.Second
	// lossSlack is how many bytes short of a read target still count as
	// having read it: a partial line at the end of the spool (nginx's last
	// incomplete write) is read but not counted until it ends.
	lossSlack = 64 << 10
)

// lossEstimator estimates the access-log lines nginx could not write while
// the spool was full. nginx drops them without a trace the agent can read
// (its error log names a failed write at most once a minute), so the
// estimate uses the evidence in the lines that did arrive, on nginx's own
// clock ($msec, the time each request was logged), whether the agent was
// reading, idle, stopped or not yet started when the spool filled:
//
//   - the fill: F, the newest $msec among the lines written before the
//     agent found the spool full (those in the spool then: the bytes read
//     so far plus the backlog at that check);
//   - the rate: ρ, the lines per second nginx wrote before F, over the
//     last second or the last 1 000 lines, whichever is longer, at most
//     10 s (from the first line in them): a burst that filled the spool,
//     from idle or not, gives the burst's rate;
//   - the episode ends R, at the first check that finds room again;
//   - lost = ρ × (R − F) − the lines read whose $msec is in (F, R], never
//     negative; added lossSettle after R, once every byte written until
//     then has been read (nginx's buffers flushed).
//
// It assumes nginx's rate held from F to R: it overcounts when traffic
// fell or stopped while the spool was full (the agent stopped for an hour
// on a night's quiet spool) and undercounts when it rose. Lines without
// $msec (a log_format without it) give no estimate (noMsec counts the
// episodes; the ingest warns). SpoolFullSeconds sums, per episode, the time from the first
// check that found the spool full to the first that found room: a lower
// bound of the time nginx could not write (the agent cannot see a fill
// while it is stopped).
//
// observe and line are called from the ingest goroutine only; the
// counters are safe for concurrent use.
type lossEstimator struct {
	bytes  uint64 // bytes of the lines seen by line
	maxMs  int64  // newest $msec seen, but past the boundary of an open episode
	bins   [lossBins]lossBinCount
	ep     lossEpisode
	noMsec atomic.Uint64

	lost        atomic.Uint64 // estimated lines, rounded to the nearest
	lostFrac    float64
	fullSeconds atomic.Uint64 // milliseconds, summed over the times found full
}

type lossBinCount struct {
	idx int64 // msec / lossBin of the lines counted
	n   uint32
}

// lossEpisode is one spool-full episode, from the first check that found
// the spool full until its estimate is added.
type lossEpisode struct {
	open     bool
	fullFrom time.Time // the first check that found it full (never zero while full)
	full     bool      // full at the last check
	boundary uint64    // bytes written before the first full check: lines before it are "before the fill"
	after    bool      // the lines read now are past the boundary
	fillMs   int64     // F: the newest $msec before the boundary
	roomAt   time.Time // R: the first check with room; zero while full
	roomMs   int64
	settle   uint64 // bytes written by roomAt+lossSettle; set then
	settled  bool
	gap      uint64 // lines read past the boundary with $msec in (F, R]
}

// line is called for every line read, in the order read: size is its
// length in bytes with the newline, msec its $msec (0 when absent or the
// line was rejected).
func (e *lossEstimator) line(msec int64, size int) {
	e.bytes += uint64(size)
	ep := &e.ep
	if ep.open && !ep.after && e.bytes > ep.boundary {
		ep.after, ep.fillMs = true, e.maxMs
	}
	if msec <= 0 {
		return
	}
	if ep.open && ep.after {
		// Written after the agent found the spool full: evidence of what
		// nginx could write during the episode, not of the rate before.
		if msec > ep.fillMs && (ep.roomAt.IsZero() || msec <= ep.roomMs) {
			ep.gap++
		}
		return
	}
	e.maxMs = max(e.maxMs, msec)
	idx := msec / lossBin
	b := &e.bins[idx%int64(lossBins)]
	if b.idx != idx {
		b.idx, b.n = idx, 0
	}
	b.n++
}

// observe is called at every check with whether the spool is full and the
// bytes nginx has written that are not read yet.
func (e *lossEstimator) observe(now time.Time, full bool, backlog int64) {
	ep := &e.ep
	written := e.bytes + uint64(max(backlog, 0))
	switch {
	case full && !ep.open:
		*ep = lossEpisode{open: true, full: true, fullFrom: now, boundary: written}
		if e.bytes >= ep.boundary { // the spool holds nothing to read: F is the newest line read
			ep.after, ep.fillMs = true, e.maxMs
		}
	case full && !ep.full: // full again before the estimate was added: one episode
		ep.full, ep.fullFrom, ep.roomAt, ep.settled = true, now, time.Time{}, false
	case !full && ep.full:
		ep.full, ep.roomAt, ep.roomMs = false, now, now.UnixMilli()
		e.fullSeconds.Add(uint64(max(now.Sub(ep.fullFrom).Milliseconds(), 0)))
	}
	if !ep.open || ep.full {
		return
	}
	if !ep.settled {
		if now.Sub(ep.roomAt) < lossSettle {
			return
		}
		ep.settle, ep.settled = written, true
	}
	if e.bytes+lossSlack < ep.settle && backlog > 0 {
		return // lines written before the settle are still unread
	}
	e.finish()
}

// finish adds the estimate of the episode and closes it.
func (e *lossEstimator) finish() {
	ep := &e.ep
	if !ep.after {
		ep.fillMs = e.maxMs
	}
	defer func() { *ep = lossEpisode{} }()
	if ep.fillMs == 0 {
		e.noMsec.Add(1) // no line with $msec before the fill: no basis
		return
	}
	rate := e.rateBefore(ep.fillMs)
	lost := rate*float64(max(ep.roomMs-ep.fillMs, 0))/1000 - float64(ep.gap)
	if lost <= 0 {
		return
	}
	e.lostFrac += lost
	whole := math.Floor(e.lostFrac + 0.5)
	e.lost.Add(uint64(whole))
	e.lostFrac -= whole
}

// rateBefore is the lines per second nginx wrote up to fillMs, over the
// shortest trailing window of at least lossRateMin that holds lossRateLines
// lines, from the first line in it: recent enough to follow a burst that
// filled the spool, long enough to be more than a few buffers of nginx.
// Fewer lines than lossRateLines in lossRateWindow are a rate over
// lossRateWindow.
func (e *lossEstimator) rateBefore(fillMs int64) float64 {
	last := fillMs / lossBin
	first, n := last+1, uint64(0)
	for idx := last; idx > last-int64(lossBins); idx-- {
		b := &e.bins[idx%int64(lossBins)]
		if b.idx != idx || b.n == 0 {
			continue
		}
		n += uint64(b.n)
		first = idx
		if n >= lossRateLines && (last-idx+1)*lossBin >= lossRateMin.Milliseconds() {
			break
		}
	}
	if n == 0 {
		return 0
	}
	span := float64((last-first+1)*lossBin) / 1000
	if n < lossRateLines {
		// Sparse: fewer lines than that in the whole window are a rate
		// over the window, not over the time since the first of them
		// (one line would be 100 lines/s, the width of its bin).
		span = lossRateWindow.Seconds()
	}
	return float64(n) / span
}
