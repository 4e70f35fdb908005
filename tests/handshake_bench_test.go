package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/handshake"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// BenchmarkHandshakePrograms measures the handshake tc programs
// (docs/benchmarks.md): nginx (1 worker, `return 200`) in srv, wrk
// (1 thread, 32 connections, 3 s) from c1 over the bound veth eth1, with
// the programs attached to eth1 and without, interleaved over 5 rounds,
// keep-alive and a new connection per request. The programs' cost per
// packet comes from the kernel's BPF statistics (run time / run count).
// It runs once whatever b.N is; use -benchtime 1x.
//
//	go test -run '^$' -bench HandshakePrograms -benchtime 1x ./tests/
func BenchmarkHandshakePrograms(b *testing.B) {
	topo.Require(b)
	for _, bin := range []string{"nginx", "wrk"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("%s not installed", bin)
		}
	}
	tp := topo.New(b)
	cg := topo.NewCgroup(b)
	dir := b.TempDir()
	os.Chmod(dir, 0o755)
	port := tp.Srv.FreePort(b)
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 1;
user www-data;
pid %[1]s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen %[2]d reuseport; location / { return 200 "ok\n"; } }
}
`, dir, port)), 0o644)
	ngx := tp.Srv.Exec(context.Background(), "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;")
	if err := cg.Start(ngx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ngx.Process.Signal(unix.SIGTERM); ngx.Wait() })
	url := fmt.Sprintf("http://%s:%d/", tp.VIP4, port)
	testenv.Eventually(b, 30*time.Second, func() bool {
		return tp.C1.Exec(context.Background(), "wrk", "-t1", "-c1", "-d1s", url).Run() == nil
	}, "nginx")

	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()

	// The Monitor lives in srv's namespace: every call that attaches runs
	// on a thread there (NS.Do).
	eth1 := tp.Srv.Ifindex(b, "eth1")
	tags := bindings.NewResolver(bindings.Spec{Bindings: []bindings.Binding{{Device: "eth1", Tag: "tag1"}}}, nil)
	tags.SetLinks([]bindings.Link{{Index: eth1, Name: "eth1"}})
	col, err := collector.New(collector.Config{}, collector.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var m *handshake.Monitor
	if err := tp.Srv.Do(b, func() error {
		var err error
		m, err = handshake.New(handshake.Config{Ports: []uint16{uint16(port)}}, handshake.Options{Collector: col, Bindings: tags, Cgroup: cg.Path})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tp.Srv.Do(b, func() error { return m.Close() }) })

	wrk := func(close bool) float64 {
		args := []string{"-t1", "-c32", "-d3s"}
		if close {
			args = append(args, "-H", "Connection: close")
		}
		out, err := tp.C1.Exec(context.Background(), "wrk", append(args, url)...).CombinedOutput()
		if err != nil {
			b.Fatalf("wrk: %v\n%s", err, out)
		}
		mm := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
		if mm == nil {
			b.Fatalf("wrk output: %s", out)
		}
		r, _ := strconv.ParseFloat(string(mm[1]), 64)
		return r
	}
	attach := func(on bool) {
		tp.Srv.Do(b, func() error {
			if on {
				m.Attach()
			} else {
				m.Detach()
			}
			return nil
		})
		want := map[bool]int{true: 1, false: 0}[on]
		if got := len(m.Attached()); got != want {
			b.Fatalf("attached devices %d, want %d", got, want)
		}
	}
	progStats := func() (runs uint64, ns time.Duration) {
		for _, p := range m.TCPrograms() {
			s, err := p.Stats()
			if err != nil {
				b.Fatal(err)
			}
			runs += s.RunCount
			ns += s.Runtime
		}
		return runs, ns
	}
	for _, close := range []bool{false, true} {
		var ratios, offs, ons []float64
		var runs uint64
		var rt time.Duration
		for round := range 5 {
			attach(false)
			off := wrk(close)
			attach(true)
			r0, t0 := progStats()
			on := wrk(close)
			r1, t1 := progStats()
			runs, rt = runs+r1-r0, rt+t1-t0
			offs, ons, ratios = append(offs, off), append(ons, on), append(ratios, on/off)
			b.Logf("close=%v round %d: without %.0f, with %.0f req/s", close, round, off, on)
		}
		attach(false)
		mode := "keep-alive"
		if close {
			mode = "new connection per request"
		}
		b.Logf("%s: without %.0f req/s, with %.0f req/s (medians), ratio %.3f (median of per-round ratios); tc programs %.1f ns per packet over %d packets",
			mode, median(offs), median(ons), median(ratios), float64(rt.Nanoseconds())/float64(max(runs, 1)), runs)
	}
}
