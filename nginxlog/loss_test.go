package nginxlog

import (
	"testing"
	"time"
)

// TestLossEstimate: 100 lines/s for two minutes (the rate converges), then
// the spool is full for 10 s with 50 lines waiting, and 250 lines are read
// until it has room: 50 + 100×10 − 250 = 800 lines lost, 10 s full.
func TestLossEstimate(t *testing.T) {
	var e lossEstimator
	t0 := time.Unix(1e9, 0)
	lines := uint64(0)
	at := t0
	for range 1200 { // 2 minutes in 100 ms steps
		e.observe(at, lines, 0, false)
		at = at.Add(100 * time.Millisecond)
		lines += 10
	}
	e.observe(at, lines, 50, false) // room, 50 lines waiting
	start := at
	at = at.Add(time.Second)
	e.observe(at, lines, 0, true) // found full
	for range 8 {
		at = at.Add(time.Second)
		e.observe(at, lines, 0, true)
	}
	at = start.Add(10 * time.Second)
	e.observe(at, lines+250, 0, false)
	if got := e.lost.Load(); got < 795 || got > 805 {
		t.Errorf("lost %d, want 800 ± 5 (rate %.2f)", got, e.epRate)
	}
	if got := e.fullSeconds.Load(); got != 10000 {
		t.Errorf("full for %d ms, want 10000", got)
	}
	// More read than expected (traffic dropped, not lost): nothing added.
	e.observe(at.Add(time.Second), lines+350, 0, true)
	e.observe(at.Add(2*time.Second), lines+100000, 0, false)
	if got := e.lost.Load(); got < 795 || got > 805 {
		t.Errorf("an episode with more lines than expected added to the estimate: %d", got)
	}
}

// TestLossEstimateAgentStopped: the agent was stopped while the spool
// filled (SIGSTOP: no check for 60 s). The episode starts at the last check
// before the stop, so the lines nginx could not write during the stop are
// estimated too.
func TestLossEstimateAgentStopped(t *testing.T) {
	var e lossEstimator
	at := time.Unix(1e9, 0)
	lines := uint64(0)
	for range 600 { // 20 lines/s in 1 s steps
		e.observe(at, lines, 0, false)
		at = at.Add(time.Second)
		lines += 20
	}
	for range 600 {
		e.observe(at, lines, 0, false)
		at = at.Add(time.Second)
		lines += 20
	}
	e.observe(at, lines, 0, false)
	at = at.Add(60 * time.Second) // stopped
	e.observe(at, lines, 0, true)
	at = at.Add(time.Second)
	e.observe(at, lines+500, 0, false) // the spool held 500 lines
	// 20 × 61 − 500 = 720
	if got := e.lost.Load(); got < 712 || got > 728 {
		t.Errorf("lost %d, want 720 ± 8", got)
	}
}
