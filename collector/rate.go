package collector

import (
	"context"
	"math"
	"sync/atomic"
	"time"
)

// RateInterval is how often the 1/5/15-minute request rates are updated.
const RateInterval = 5 * time.Second

// rate is an exponentially weighted moving average of requests per second
// over 1, 5 and 15 minutes, like the Unix load average. Only the ticker
// writes it; snapshots read it.
type rate struct {
	last uint64           // request total at the previous tick (ticker only)
	m    [3]atomic.Uint64 // float64 bits of m1, m5, m15
}

// update folds the requests seen over dt into the averages.
func (r *rate) update(total uint64, dt time.Duration) {
	delta := total - r.last
	r.last = total
	if dt <= 0 {
		return
	}
	inst := float64(delta) / dt.Seconds()
	for i, win := range [3]time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute} {
		alpha := 1 - math.Exp(-dt.Seconds()/win.Seconds())
		old := math.Float64frombits(r.m[i].Load())
		r.m[i].Store(math.Float64bits(old + alpha*(inst-old)))
	}
}

func (r *rate) values() Rates {
	return Rates{
		M1:  math.Float64frombits(r.m[0].Load()),
		M5:  math.Float64frombits(r.m[1].Load()),
		M15: math.Float64frombits(r.m[2].Load()),
	}
}

// Rates are requests per second, exponentially averaged over 1, 5 and 15
// minutes.
type Rates struct {
	M1, M5, M15 float64
}

// Run updates the request rates every RateInterval until ctx is done, then
// returns nil. The counters do not depend on it; only Rates do.
func (c *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(RateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c.Tick()
		}
	}
}

// Tick updates the request rates now. Run calls it every RateInterval; tests
// and callers with their own scheduler may call it directly.
func (c *Collector) Tick() {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	now := c.now()
	dt := now.Sub(c.lastTick)
	c.lastTick = now
	for _, e := range c.snapshotEntries() {
		e.rate.update(e.requests(), dt)
	}
}

// snapshotEntries returns the entries created so far. The slice is
// append-only, so the returned prefix never changes under the caller.
func (c *Collector) snapshotEntries() []*entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[:len(c.entries):len(c.entries)]
}
