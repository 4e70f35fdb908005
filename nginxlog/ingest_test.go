package nginxlog

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/family"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/loader"
)

type fixture struct {
	coll *collector.Collector
	tags *bindings.Resolver
	maps *loader.Maps
	path string
}

// newFixture: eth1 (ifindex 7) is bound to tag "maglev"; with bpf, a
// private LRU hash with the layout of ipng_by_tuple stands in for the
// program's map (needs CAP_BPF; skipped otherwise).
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
	out := map[string]uint64{}
	for _, s := range c.Snapshot(collector.Filter{}).Series {
		for _, cc := range s.Codes {
			out[s.SourceTag+" "+s.VIP+" "+cc.Code] += cc.Requests
		}
	}
	return out
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
	waitFor(t, func() bool { return in.Stats().Lines == uint64(len(lines)) })
	stop()
	want := map[string]uint64{
		"maglev 192.0.2.10 2xx": 1, "maglev 192.0.2.10 3xx": 1, "maglev 2001:db8:10::10 4xx": 1,
		"direct 192.0.2.10 5xx": 1, "direct 192.0.2.10 2xx": 1,
	}
	if got := requests(f.coll); !equalMaps(got, want) {
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
	waitFor(t, func() bool { return in.Stats().Lines == 2 })
	stop()
	if got, want := requests(f.coll), map[string]uint64{"direct 192.0.2.10 2xx": 1, "direct 192.0.2.10 5xx": 1}; !equalMaps(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
	if n := f.coll.Snapshot(collector.Filter{}).Meta.AttributionFallbacks[ReasonNoBPF]; n != 2 {
		t.Errorf("%s = %d, want 2", ReasonNoBPF, n)
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

func TestLogtailDropsWhenFull(t *testing.T) {
	lt := &logtail{free: make(chan []byte, 2), queue: make(chan []byte, 2)}
	lt.free <- nil
	lt.free <- nil
	for range 5 {
		lt.send([]byte(line(nil)), "t", "d") // no sender running: never blocks
	}
	if lt.dropped.Load() != 3 || len(lt.queue) != 2 {
		t.Errorf("dropped %d, queued %d; want 3, 2", lt.dropped.Load(), len(lt.queue))
	}
}

func TestNewErrors(t *testing.T) {
	f := newFixture(t, false)
	if _, err := New(config.NginxConfig{}, Deps{}); err == nil {
		t.Error("New without deps succeeded")
	}
	if _, err := New(config.NginxConfig{LogFile: f.path, Netns: "/nonexistent"}, Deps{Collector: f.coll, Bindings: f.tags, Maps: &loader.Maps{ByTuple: nil}}); err != nil {
		t.Errorf("netns is only used with BPF maps: %v", err)
	}
	if os.Geteuid() == 0 {
		g := newFixture(t, true)
		if _, err := New(config.NginxConfig{LogFile: g.path, Netns: "/nonexistent"}, Deps{Collector: g.coll, Bindings: g.tags, Maps: g.maps}); err == nil {
			t.Error("New with a missing netns succeeded")
		}
	}
}

func equalMaps(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
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
	cookie, err := loader.NetnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.maps.DeleteTuple(cookie, netip.MustParseAddrPort("192.0.2.10:80"), netip.MustParseAddrPort("198.51.100.7:40000")); err != nil {
		t.Fatal(err)
	}
	in.line(first)                                                                           // from the cache: still maglev
	in.line([]byte(line(map[string]string{"connection": `"42"`, "remote_port": `"40001"`}))) // same serial, other tuple: miss
	want := map[string]uint64{"maglev 192.0.2.10 2xx": 2, "direct 192.0.2.10 2xx": 1}
	if got := requests(f.coll); !equalMaps(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
}
