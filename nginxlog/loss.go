package nginxlog

import (
	"math"
	"sync/atomic"
	"time"
)

// rateWindow is the time constant of the line rate the loss estimate
// assumes while the spool is full.
const rateWindow = time.Minute

// lossEstimator estimates the access-log lines nginx could not write while
// the spool was full. nginx drops them without a trace the agent can read
// (its error log names a failed write at most once a minute), so the
// estimate is: the lines nginx would have written during the episode at the
// rate of the minute before it (an exponentially weighted average of the
// lines read per second while the spool had room), plus the lines already
// waiting in the spool when it filled, minus the lines read from the spool
// until it has room again. The episode runs from the last check that found
// room to the first that finds room again, so it also covers a spool that
// filled while the agent itself was stopped. It is added when the episode
// ends. It assumes the traffic rate held: it undercounts a burst that
// filled the spool and overcounts a drop in traffic during the episode.
type lossEstimator struct {
	lastAt    time.Time
	lastLines uint64
	lastWait  float64 // lines waiting in the spool at the last check
	rate      float64 // lines per second, averaged over rateWindow (biased towards 0 at first)
	weight    float64 // the average's total weight: rate/weight is unbiased
	full      bool

	epStart time.Time
	epLines uint64
	epWait  float64
	epRate  float64

	lost        atomic.Uint64 // estimated lines, rounded to the nearest
	lostFrac    float64
	fullSeconds atomic.Uint64 // milliseconds, summed over ended episodes
}

// observe is called at every check with the lines read so far, the lines
// waiting in the spool (estimated from its backlog bytes) and whether the
// spool is full. Not safe for concurrent use; the counters are.
func (e *lossEstimator) observe(now time.Time, lines uint64, waiting float64, full bool) {
	defer func() { e.lastAt, e.lastLines, e.lastWait, e.full = now, lines, waiting, full }()
	if e.lastAt.IsZero() {
		return
	}
	dt := now.Sub(e.lastAt).Seconds()
	switch {
	case !e.full && !full:
		if dt > 0 {
			alpha := 1 - math.Exp(-dt/rateWindow.Seconds())
			e.rate += alpha * (float64(lines-e.lastLines)/dt - e.rate)
			e.weight += alpha * (1 - e.weight)
		}
	case !e.full && full:
		e.epStart, e.epLines, e.epWait, e.epRate = e.lastAt, e.lastLines, e.lastWait, 0
		if e.weight > 0 {
			e.epRate = e.rate / e.weight
		}
	case e.full && !full:
		dur := now.Sub(e.epStart)
		expected := e.epWait + e.epRate*dur.Seconds()
		if lost := expected - float64(lines-e.epLines); lost > 0 {
			e.lostFrac += lost
			whole := math.Floor(e.lostFrac + 0.5)
			e.lost.Add(uint64(whole))
			e.lostFrac -= whole
		}
		e.fullSeconds.Add(uint64(dur.Milliseconds()))
	}
}
