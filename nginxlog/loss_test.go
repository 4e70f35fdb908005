package nginxlog

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// lossSim is nginx writing an access log to a spool of fixed size, on a
// synthetic clock in 10 ms steps, and the ingest reading it: nginx
// buffers lines (bufLines, or flushInterval after the first) and writes a
// buffer whole if the spool has room for it, else drops it (counted in
// dropped: the truth the estimate is compared with); the agent, when
// running, checks the spool every tick (checkEvery) and reads at most
// readPerTick lines, as the ingest does.
type lossSim struct {
	t   *testing.T
	e   lossEstimator
	now time.Time

	spool     []int64 // $msec of the lines written and not read
	capLines  int     // spool size, in lines
	lineSize  int
	buf       []int64
	bufSince  time.Time
	dropped   int
	written   int
	firstDrop time.Time
	lastDrop  time.Time

	readPerTick int
	agentOn     bool
}

const (
	simStep       = 10 * time.Millisecond
	simBufLines   = 64
	simFlush      = time.Second
	simLineSize   = 100
	simFullBelow  = 2 * simBufLines // lines of free space under which the spool counts as full
	simCheckEvery = 100 * time.Millisecond
)

func newLossSim(t *testing.T, capLines, readPerTick int) *lossSim {
	return &lossSim{t: t, now: time.Unix(1.7e9, 0), capLines: capLines, lineSize: simLineSize, readPerTick: readPerTick, agentOn: true}
}

// run advances d at rate lines per second.
func (s *lossSim) run(d time.Duration, rate float64) {
	var owed float64
	for end := s.now.Add(d); s.now.Before(end); s.now = s.now.Add(simStep) {
		owed += rate * simStep.Seconds()
		for ; owed >= 1; owed-- {
			if len(s.buf) == 0 {
				s.bufSince = s.now
			}
			s.buf = append(s.buf, s.now.UnixMilli())
			if len(s.buf) == simBufLines {
				s.flush()
			}
		}
		if len(s.buf) > 0 && s.now.Sub(s.bufSince) >= simFlush {
			s.flush()
		}
		if s.agentOn && s.now.Sub(time.Unix(1.7e9, 0))%simCheckEvery == 0 {
			s.check()
		}
	}
}

// flush writes nginx's buffer, or drops it when it does not fit.
func (s *lossSim) flush() {
	if len(s.spool)+len(s.buf) > s.capLines {
		s.dropped += len(s.buf)
		if s.firstDrop.IsZero() {
			s.firstDrop = s.now
		}
		s.lastDrop = s.now
	} else {
		s.spool = append(s.spool, s.buf...)
		s.written += len(s.buf)
	}
	s.buf = s.buf[:0]
}

// check is one turn of the ingest: look for a full spool, read, free.
func (s *lossSim) check() {
	full := len(s.spool) > s.capLines-simFullBelow
	s.e.observe(s.now, full, int64(len(s.spool)*s.lineSize))
	n := min(len(s.spool), s.readPerTick)
	for _, ms := range s.spool[:n] {
		s.e.line(ms, s.lineSize)
	}
	s.spool = append(s.spool[:0], s.spool[n:]...)
}

// expect checks the estimate against the lines nginx dropped, within tol
// (a fraction) plus one buffer.
func (s *lossSim) expect(tol float64) {
	s.t.Helper()
	if s.e.ep.open {
		s.t.Fatalf("episode still open (room at %v, settled %v)", s.e.ep.roomAt, s.e.ep.settled)
	}
	got, want := float64(s.e.lost.Load()), float64(s.dropped)
	if want == 0 {
		s.t.Fatal("the scenario dropped no line")
	}
	if math.Abs(got-want) > tol*want+simBufLines {
		s.t.Errorf("estimated %v lines lost, nginx dropped %v (±%.0f%% + %d)", got, want, tol*100, simBufLines)
	}
	// The agent sees the spool full no longer than nginx drops lines
	// (plus a check either side): never from the zero time.
	full := time.Duration(s.e.fullSeconds.Load()) * time.Millisecond
	drops := s.lastDrop.Sub(s.firstDrop)
	if full <= 0 || full > drops+2*simCheckEvery {
		s.t.Errorf("full for %v by the estimator; nginx dropped lines for %v", full, drops)
	}
	s.t.Logf("estimated %v, dropped %v, written %d; full %v, dropping for %v", got, want, s.written, full, drops)
}

// TestLossFillsWhileBusy: the agent reads and keeps up with 1 000 lines/s,
// then 5 000 lines/s for 20 s outrun its 2 000 lines/s: the spool fills
// and nginx drops lines until the traffic falls back to 1 000 lines/s and
// the agent catches up.
func TestLossFillsWhileBusy(t *testing.T) {
	s := newLossSim(t, 20000, 200)
	s.run(30*time.Second, 1000)
	s.run(20*time.Second, 5000)
	s.run(60*time.Second, 1000)
	s.expect(0.05)
}

// TestLossFillsFromIdle: nothing for two minutes (the rate the agent read
// before is 0), then a burst of 8 000 lines/s for 10 s that the agent,
// reading 2 000 lines/s, cannot follow; the traffic goes on at 8 000
// lines/s until well after the spool has room again.
func TestLossFillsFromIdle(t *testing.T) {
	s := newLossSim(t, 20000, 200)
	s.run(2*time.Minute, 0)
	s.run(10*time.Second, 8000)
	s.readPerTick = 5000 // the agent gets CPU back
	s.run(30*time.Second, 8000)
	s.expect(0.05)
}

// TestLossAgentStopped: 200 lines/s with the agent reading; the agent is
// stopped for 5 minutes (SIGSTOP: no check, no read) while the spool fills
// after about 100 s, then resumes with the traffic going on.
func TestLossAgentStopped(t *testing.T) {
	s := newLossSim(t, 20000, 1000)
	s.run(time.Minute, 200)
	s.agentOn = false
	s.run(5*time.Minute, 200)
	s.agentOn = true
	s.run(30*time.Second, 200)
	s.expect(0.05)
	if full := time.Duration(s.e.fullSeconds.Load()) * time.Millisecond; full > time.Second {
		t.Errorf("full for %v: the agent saw the spool full for one check only", full)
	}
}

// TestLossStartsFull: the agent starts on a spool that filled 3 minutes
// before (the previous agent died; nginx went on at 300 lines/s): the
// episode starts at the first check, never at the zero time, and the lines
// dropped before the agent started are estimated from the spool's lines.
func TestLossStartsFull(t *testing.T) {
	s := newLossSim(t, 20000, 2000)
	s.agentOn = false
	s.run(4*time.Minute, 300)
	if s.dropped == 0 {
		t.Fatal("the spool did not fill")
	}
	s.agentOn = true
	s.run(30*time.Second, 300)
	s.expect(0.05)
	if full := time.Duration(s.e.fullSeconds.Load()) * time.Millisecond; full > time.Second {
		t.Errorf("full for %v: the agent saw the spool full from its first check, for %v", full, simCheckEvery)
	}
}

// TestLossTrafficStopped: the bound the docs state: traffic stops while
// the spool is full and the agent stopped; the estimate assumes the rate
// held until the agent found room, so it overcounts by the rate times the
// quiet time, never undercounts.
func TestLossTrafficStopped(t *testing.T) {
	s := newLossSim(t, 20000, 2000)
	s.run(10*time.Second, 1000)
	s.agentOn = false
	s.run(30*time.Second, 1000) // fills after ~20 s, ~10 s dropped
	s.run(5*time.Second, 0)     // quiet while still full
	s.agentOn = true
	s.run(30*time.Second, 0)
	got, dropped := float64(s.e.lost.Load()), float64(s.dropped)
	over := 1000 * 5.0
	if got < dropped*0.95 || got > (dropped+over)*1.05 {
		t.Errorf("estimated %v, dropped %v: want between the drops and the drops + %v (the quiet time at the rate)", got, dropped, over)
	}
}

// TestLossNoMsec: lines without $msec give no estimate, and the episode is
// counted in noMsec (the ingest warns); the time full is still counted.
func TestLossNoMsec(t *testing.T) {
	var e lossEstimator
	at := time.Unix(1.7e9, 0)
	e.observe(at, false, 0)
	e.line(0, 100)
	e.observe(at.Add(time.Second), true, 1000)
	e.line(0, 100)
	e.observe(at.Add(3*time.Second), false, 0)
	e.observe(at.Add(6*time.Second), false, 0)
	if e.lost.Load() != 0 || e.noMsec.Load() != 1 || e.fullSeconds.Load() != 2000 || e.ep.open {
		t.Errorf("lost %d, noMsec %d, full %d ms, open %v; want 0, 1, 2000, false", e.lost.Load(), e.noMsec.Load(), e.fullSeconds.Load(), e.ep.open)
	}
}

// TestIngestStartsOnFullSpool: the ingest starts on a 1 MiB tmpfs spool
// that nginx filled 1 s before, at 2 000 lines/s, and has not written to
// since. Its first check finds the spool full before it has opened the
// file: the episode starts then (the time full is a fraction of the test's
// wall time, never from the zero time), and the lines nginx dropped from
// the fill until the ingest found room are estimated at the rate of the
// spool's lines: 2 000/s × (room − fill).
func TestIngestStartsOnFullSpool(t *testing.T) {
	testenv.RequireRoot(t)
	began := time.Now()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0755"); err != nil {
		t.Fatalf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	f := newFixture(t, false)
	f.path = filepath.Join(dir, "access.log")
	const rate = 2000
	one := len(line(map[string]string{"msec": `"1700000000.000"`})) + 1
	n := (1<<20 - fullBelow + 16<<10) / one // leaves less than fullBelow free
	fill := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	var b strings.Builder
	for i := range n {
		at := fill.Add(-time.Duration(n-1-i) * time.Second / rate)
		b.WriteString(line(map[string]string{"msec": fmt.Sprintf(`"%d.%03d"`, at.Unix(), at.Nanosecond()/1e6)}))
		b.WriteByte('\n')
	}
	if err := os.WriteFile(f.path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if !spoolFull(dir, fullBelow) {
		t.Fatal("the spool is not full")
	}
	start := time.Now()
	in := f.ingest(t, config.NginxConfig{})
	stop := runIngest(t, in)
	defer stop()
	testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().SpoolFullSeconds > 0 }, "room again")
	roomBy := time.Now()
	testenv.Eventually(t, 20*time.Second, func() bool { return in.Stats().LinesLostEstimated > 0 }, "the estimate")
	st := in.Stats()
	if st.Lines != uint64(n) {
		t.Errorf("read %d lines, want %d", st.Lines, n)
	}
	if wall := time.Since(began).Seconds(); st.SpoolFullSeconds >= wall {
		t.Errorf("full for %.3f s, longer than the test (%.3f s)", st.SpoolFullSeconds, wall)
	}
	lo, hi := rate*start.Sub(fill).Seconds()*0.95, rate*roomBy.Sub(fill).Seconds()*1.05
	if got := float64(st.LinesLostEstimated); got < lo || got > hi {
		t.Errorf("estimated %v lines lost, want %.0f to %.0f (2 000/s from the fill to the ingest's start, to the room seen)", got, lo, hi)
	}
	t.Logf("%d lines in the spool; estimated %d lost; full %.3f s", n, st.LinesLostEstimated, st.SpoolFullSeconds)
}

// TestLossSparse: a quiet nginx (one line every 10 s) whose spool fills
// while the agent is stopped, and drops lines for many minutes: the rate
// before the fill is the line or two of the last 10 s over those 10 s, not
// over the 10 ms of the one bin that holds the first of them (which made
// it 100 lines/s per line).
func TestLossSparse(t *testing.T) {
	s := newLossSim(t, 200, 1000)
	s.run(time.Minute, 0.1)
	s.agentOn = false
	s.run(time.Hour, 0.1) // fills after ~33 minutes
	s.agentOn = true
	s.run(time.Minute, 0.1)
	s.expect(0.3)
}
