package nginxlog

import (
	"context"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/family"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/loader"
)

type fixture struct {
	coll *collector.Collector
	tags *bindings.Resolver
	maps *loader.Maps
	path string
}

// newFixture: eth1 (ifindex 7) is bound to tag "maglev"; with bpf, private
// rings with the layout of the program's (loader.NewTupleMaps) stand in for
// them (needs CAP_BPF; skipped otherwise).
func newFixture(t testing.TB, bpf bool) *fixture {
	t.Helper()
	coll, err := collector.New(collector.Config{}, collector.Options{RejectReasons: RejectReasons(), FallbackReasons: FallbackReasons()})
	if err != nil {
		t.Fatal(err)
	}
	tags := bindings.NewResolver(bindings.Spec{DefaultTag: "direct", Bindings: []bindings.Binding{{Device: "eth1", Tag: "maglev"}}}, slog.New(slog.DiscardHandler))
	tags.SetLinks([]bindings.Link{{Index: 7, Name: "eth1"}})
	f := &fixture{coll: coll, tags: tags}
	if dir, ok := t.(*testing.T); ok {
		f.path = filepath.Join(spoolDir(dir), "access.log")
	} else {
		f.path = filepath.Join(t.TempDir(), "access.log")
	}
	if bpf {
		m, err := loader.NewTupleMaps(1024)
		if err != nil {
			testenv.Skip(t, "creating a BPF map (needs CAP_BPF): "+err.Error())
		}
		t.Cleanup(func() { m.Close() })
		f.maps = m
	}
	return f
}

func (f *fixture) stamp(t testing.TB, local, remote string, ifindex uint32, fam uint8) {
	t.Helper()
	cookie, err := loader.NetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	st := loader.Stamp{NetnsCookie: cookie, Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote),
		Ifindex: ifindex, Family: family.Family(fam)}
	if err := f.maps.PutTuple(st); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) ingest(t testing.TB, cfg config.NginxConfig) *Ingest {
	t.Helper()
	cfg.LogFile = f.path
	cfg.PollInterval = 5 * time.Millisecond
	in, err := New(cfg, Deps{Collector: f.coll, Bindings: f.tags, Maps: f.maps})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// requests returns (tag, vip, code) → requests.
func requests(c *collector.Collector) map[string]uint64 {
	return fixtures.CollectorRequests(c)
}

func runIngest(t *testing.T, in *Ingest) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// TestIngestAttribution: lines are recorded under the tag of their stamp
// (found in the ring of stamps), misses and malformed lines counted.
func TestIngestAttribution(t *testing.T) {
	f := newFixture(t, true)
	f.stamp(t, "192.0.2.10:80", "198.51.100.7:40000", 7, 4)
	f.stamp(t, "[2001:db8:10::10]:80", "[2001:db8:1::2]:40000", 7, 6)
	f.stamp(t, "192.0.2.10:80", "198.51.100.8:40000", 99, 4) // unbound device
	in := f.ingest(t, config.NginxConfig{})
	stop := runIngest(t, in)
	lines := []string{
		line(nil), // maglev
		line(map[string]string{"server_addr": `"::ffff:192.0.2.10"`, "remote_addr": `"::ffff:198.51.100.7"`, "status": `"301"`}), // dual-stack listener
		line(map[string]string{"server_addr": `"2001:db8:10::10"`, "remote_addr": `"2001:db8:1::2"`, "status": `"404"`}),
		line(map[string]string{"remote_addr": `"198.51.100.8"`, "status": `"503"`}), // unbound → direct
		line(map[string]string{"remote_addr": `"198.51.100.9"`}),                    // never stamped → direct
		`{"garbage`, line(map[string]string{"status": `"x"`}),
	}
	appendFile(t, f.path, strings.Join(lines, "\n")+"\n")
	testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == uint64(len(lines)) }, "%d lines read", len(lines))
	stop()
	want := map[string]uint64{
		"maglev 192.0.2.10 2xx": 1, "maglev 192.0.2.10 3xx": 1, "maglev 2001:db8:10::10 4xx": 1,
		"direct 192.0.2.10 5xx": 1, "direct 192.0.2.10 2xx": 1,
	}
	if got := requests(f.coll); !maps.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
	meta := f.coll.Snapshot(collector.Filter{}).Meta
	if meta.OutcomesRejected["nginx_malformed"] != 1 || meta.OutcomesRejected["nginx_bad_number"] != 1 {
		t.Errorf("rejected = %v", meta.OutcomesRejected)
	}
	if meta.AttributionFallbacks[ReasonNeverSeen] != 1 {
		t.Errorf("fallbacks = %v", meta.AttributionFallbacks)
	}
	if s := in.Stats(); s.Recorded != 5 || s.Rejected != 2 || s.TupleMisses != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestIngestWithoutBPF(t *testing.T) {
	f := newFixture(t, false)
	in := f.ingest(t, config.NginxConfig{})
	stop := runIngest(t, in)
	appendFile(t, f.path, line(nil)+"\n"+line(map[string]string{"status": `"500"`})+"\n")
	testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == 2 }, "2 lines read")
	stop()
	if got, want := requests(f.coll), map[string]uint64{"direct 192.0.2.10 2xx": 1, "direct 192.0.2.10 5xx": 1}; !maps.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
	if n := f.coll.Snapshot(collector.Filter{}).Meta.AttributionFallbacks[ReasonNoBPF]; n != 2 {
		t.Errorf("%s = %d, want 2", ReasonNoBPF, n)
	}
}

// TestIngestSleepsWhileIdle: once every line is read, the ingest sleeps
// until nginx writes (inotify on the spool directory) instead of reading
// the log every poll_interval (5 ms here: 100 reads in half a second), and
// wakes for what is written next.
func TestIngestSleepsWhileIdle(t *testing.T) {
	f := newFixture(t, false)
	in := f.ingest(t, config.NginxConfig{})
	stop := runIngest(t, in)
	defer stop()
	for i := range 3 {
		appendFile(t, f.path, line(nil)+"\n")
		testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == uint64(i+1) }, "line %d read", i+1)
		// Reads while idle: one after the line (its own freeing wakes
		// it), one per idleWake; a loaded machine makes fewer.
		before := in.polls.Load()
		time.Sleep(500 * time.Millisecond)
		if n := in.polls.Load() - before; n > 5 {
			t.Errorf("round %d: %d reads of an idle log in 500 ms (poll_interval 5 ms)", i+1, n)
		}
	}
}

func TestIngestLogtail(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	f := newFixture(t, true)
	f.stamp(t, "192.0.2.10:80", "198.51.100.7:40000", 7, 4)
	in := f.ingest(t, config.NginxConfig{Logtail: config.NginxLogtailConfig{Target: pc.LocalAddr().String()}})
	stop := runIngest(t, in)
	defer stop()
	appendFile(t, f.path, line(nil)+"\n")
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"source_tag":"maglev","device":"eth1",` + line(nil)[1:]
	if got := string(buf[:n]); got != want {
		t.Errorf("logtail got %s\nwant %s", got, want)
	}
}

func TestNewErrors(t *testing.T) {
	f := newFixture(t, false)
	if _, err := New(config.NginxConfig{}, Deps{}); err == nil {
		t.Error("New without deps succeeded")
	}
	if _, err := New(config.NginxConfig{LogFile: f.path, Netns: "/nonexistent"}, Deps{Collector: f.coll, Bindings: f.tags, Maps: &loader.Maps{}}); err != nil {
		t.Errorf("netns is only used with BPF maps: %v", err)
	}
	if os.Geteuid() == 0 {
		g := newFixture(t, true)
		if _, err := New(config.NginxConfig{LogFile: g.path, Netns: "/nonexistent"}, Deps{Collector: g.coll, Bindings: g.tags, Maps: g.maps}); err == nil {
			t.Error("New with a missing netns succeeded")
		}
	}
}

// TestConnCache: a kept-alive connection is looked up once; its serial
// with another 4-tuple is not taken from the cache.
func TestConnCache(t *testing.T) {
	f := newFixture(t, true)
	f.stamp(t, "192.0.2.10:80", "198.51.100.7:40000", 7, 4)
	in := f.ingest(t, config.NginxConfig{})
	first := []byte(line(map[string]string{"connection": `"42"`}))
	in.line(first)
	in.flush()
	cookie, err := loader.NetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.maps.DeleteTuple(cookie, netip.MustParseAddrPort("192.0.2.10:80"), netip.MustParseAddrPort("198.51.100.7:40000")); err != nil {
		t.Fatal(err)
	}
	in.line(first)                                                                           // from the cache: still maglev
	in.line([]byte(line(map[string]string{"connection": `"42"`, "remote_port": `"40001"`}))) // same serial, other tuple: miss
	in.flush()
	want := map[string]uint64{"maglev 192.0.2.10 2xx": 2, "direct 192.0.2.10 2xx": 1}
	if got := requests(f.coll); !maps.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
}

// TestIngestLogtailCountsAcrossReload: the logtail counters are the
// ingest's, so a reload to another target keeps them, and write errors to
// a target nothing listens on are counted.
func TestIngestLogtailCountsAcrossReload(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()

	f := newFixture(t, false)
	in := f.ingest(t, config.NginxConfig{Logtail: config.NginxLogtailConfig{Target: pc.LocalAddr().String()}})
	var once sync.Once
	stopRun := runIngest(t, in)
	stop := func() { once.Do(stopRun) }
	defer stop()
	appendFile(t, f.path, line(nil)+"\n")
	testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().LogtailSent == 1 }, "1 line sent")

	if err := in.Reload(config.NginxConfig{LogFile: f.path, PollInterval: 5 * time.Millisecond, Logtail: config.NginxLogtailConfig{Target: deadAddr}}); err != nil {
		t.Fatal(err)
	}
	lines := uint64(1)
	for deadline := time.Now().Add(20 * time.Second); in.Stats().LogtailErrors == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no write error counted: %+v", in.Stats())
		}
		appendFile(t, f.path, line(nil)+"\n")
		lines++
		testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == lines }, "%d lines read", lines)
	}
	s := in.Stats()
	if s.LogtailSent < 1 {
		t.Errorf("sent %d after the reload, want at least the 1 line before it", s.LogtailSent)
	}
	stop()
	s = in.Stats()
	if sum := s.LogtailSent + s.LogtailDropped + s.LogtailErrors; sum != lines {
		t.Errorf("sent %d + dropped %d + failed %d = %d, want the %d lines", s.LogtailSent, s.LogtailDropped, s.LogtailErrors, sum, lines)
	}
}

// TestIngestEvicted: a stamp that later stamps overwrote in the ring is
// reported evicted, whether the ingest had indexed it (its slot no longer
// holds it) or not (the ring of hashes still knows it was stamped); the
// stamps still in the ring are found, and a 4-tuple never stamped is never
// seen.
func TestIngestEvicted(t *testing.T) {
	f := newFixture(t, true) // a ring of 1024 stamps
	f.stamp(t, "192.0.2.10:80", "198.51.100.7:40000", 7, 4)
	in := f.ingest(t, config.NginxConfig{})
	t.Cleanup(in.tuples.close)
	in.line([]byte(line(map[string]string{"connection": `"1"`})))
	in.flush() // indexes the stamp, finds it: maglev
	f.stamp(t, "192.0.2.10:80", "198.51.100.8:40000", 7, 4)
	for i := range 1024 {
		f.stamp(t, "192.0.2.10:80", "203.0.113.1:"+strconv.Itoa(10000+i), 7, 4)
	}
	for i, remote := range []string{"198.51.100.7", "198.51.100.8", "203.0.113.1", "198.51.100.9"} {
		port := "40000"
		if remote == "203.0.113.1" {
			port = "11023" // the last stamp
		}
		in.line([]byte(line(map[string]string{"connection": `"` + strconv.Itoa(2+i) + `"`, "remote_addr": `"` + remote + `"`, "remote_port": `"` + port + `"`})))
	}
	in.flush()
	if got, want := requests(f.coll), map[string]uint64{"maglev 192.0.2.10 2xx": 2, "direct 192.0.2.10 2xx": 3}; !maps.Equal(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
	fb := f.coll.Snapshot(collector.Filter{}).Meta.AttributionFallbacks
	if fb[ReasonEvicted] != 2 || fb[ReasonNeverSeen] != 1 {
		t.Errorf("fallbacks = %v, want 2 %s, 1 %s", fb, ReasonEvicted, ReasonNeverSeen)
	}
}

// TestSpoolModes: the agent creates a missing spool directory searchable
// (nginx's workers reopen the file by path) but not listable, and the
// file readable and writable by its owner only, before nginx makes it
// with its own umask; a file nginx made first is narrowed to its owner.
func TestSpoolModes(t *testing.T) {
	f := newFixture(t, false)
	dir := filepath.Join(filepath.Dir(f.path), "sub")
	f.path = filepath.Join(dir, "access.log")
	f.ingest(t, config.NginxConfig{})
	for _, c := range []struct {
		path string
		want os.FileMode
	}{{dir, os.ModeDir | SpoolDirMode}, {f.path, SpoolFileMode}} {
		if fi, err := os.Stat(c.path); err != nil || fi.Mode() != c.want {
			t.Errorf("%s: %v %v, want mode %v", c.path, fi.Mode(), err, c.want)
		}
	}

	// nginx was first (0644, and 0640 with a set-group-ID bit), before the
	// agent ran or at a rename-style rotation: the ingest narrows the file
	// to its owner when it takes it over and keeps its content, and a
	// writer that opened it before (nginx's worker) keeps writing through
	// its descriptor: each line is counted once.
	for _, mode := range []os.FileMode{0o644, 0o640 | os.ModeSetgid} {
		g := newFixture(t, false)
		nginxCreates := func(path string) *os.File {
			t.Helper()
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := w.WriteString(line(nil) + "\n"); err != nil {
				t.Fatal(err)
			}
			return w
		}
		checkMode := func(when string) {
			t.Helper()
			if fi, err := os.Stat(g.path); err != nil || fi.Mode() != 0o600 {
				t.Errorf("spool file nginx made with mode %v, %s: now %v %v, want -rw-------", mode, when, fi.Mode(), err)
			}
		}
		w := nginxCreates(g.path)
		in := g.ingest(t, config.NginxConfig{})
		stop := runIngest(t, in)
		testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == 1 }, "the line nginx wrote first read")
		checkMode("at start")
		if _, err := w.WriteString(line(nil) + "\n"); err != nil {
			t.Fatalf("writing through the descriptor opened before the narrowing: %v", err)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == 2 }, "the line written after the narrowing read")
		// Rotation: renamed away, nginx's master creates the file again.
		if err := os.Rename(g.path, g.path+".1"); err != nil {
			t.Fatal(err)
		}
		w2 := nginxCreates(g.path)
		testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == 3 }, "the first line of the new file read")
		checkMode("after a rotation")
		if _, err := w2.WriteString(line(nil) + "\n"); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, func() bool { return in.Stats().Lines == 4 }, "the second line of the new file read")
		stop()
		if got, want := requests(g.coll), map[string]uint64{"direct 192.0.2.10 2xx": 4}; !maps.Equal(got, want) {
			t.Errorf("requests = %v, want %v", got, want)
		}
	}
}
