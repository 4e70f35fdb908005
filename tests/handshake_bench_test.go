package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/handshake"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// hsBench is nginx (1 worker, `return 200`) in srv, a handshake Monitor
// counting its port on the bound veth eth1 (not attached), and wrk from c1.
type hsBench struct {
	tp  *topo.Topo
	m   *handshake.Monitor
	url string
}

func newHSBench(b *testing.B) *hsBench {
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
	return &hsBench{tp: tp, m: m, url: url}
}

// wrk runs wrk -t1 -c32 -d3s from c1 and returns its requests per second.
func (h *hsBench) wrk(b *testing.B, close bool) float64 {
	args := []string{"-t1", "-c32", "-d3s"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	out, err := h.tp.C1.Exec(context.Background(), "wrk", append(args, h.url)...).CombinedOutput()
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

// attach attaches the Monitor's tc programs to eth1 (on) or detaches them.
func (h *hsBench) attach(b *testing.B, on bool) {
	h.tp.Srv.Do(b, func() error {
		if on {
			h.m.Attach()
		} else {
			h.m.Detach()
		}
		return nil
	})
	want := map[bool]int{true: 1, false: 0}[on]
	if got := len(h.m.Attached()); got != want {
		b.Fatalf("attached devices %d, want %d", got, want)
	}
}

// progStats sums the run count and run time of progs.
func progStats(b *testing.B, progs ...*ebpf.Program) (runs uint64, ns time.Duration) {
	for _, p := range progs {
		s, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		runs += s.RunCount
		ns += s.Runtime
	}
	return runs, ns
}

// BenchmarkHandshakePrograms measures what the handshake tc programs cost
// nginx (docs/benchmarks.md): nginx (1 worker, `return 200`) in srv, wrk
// (1 thread, 32 connections, 3 s) from c1 over the bound veth eth1, without
// programs on eth1, with the handshake programs attached to it, and with a
// pair of programs that only return attached the same way (the cost of
// having tcx programs at all: dispatch, static keys), over 6 rounds whose
// order rotates, keep-alive and a new connection per request. The
// kernel's BPF statistics stay off: they add two clock reads to every run
// of an attached program, which would be charged to the programs
// (BenchmarkHandshakeProgramCost measures them). It runs once whatever b.N
// is; use -benchtime 1x.
//
//	go test -run '^$' -bench 'HandshakePrograms$' -benchtime 1x ./tests/
func BenchmarkHandshakePrograms(b *testing.B) {
	h := newHSBench(b)
	if on, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled"); err == nil && len(on) > 0 && on[0] != '0' {
		b.Fatal("kernel.bpf_stats_enabled is on: every run of the programs would include the statistics' clock reads")
	}
	noopIn, noopOut := h.noopProg(b), h.noopProg(b)
	for _, close := range []bool{false, true} {
		type config struct {
			name   string
			attach func() (detach func())
			rps    []float64
		}
		configs := []*config{
			{name: "without", attach: func() func() { return func() {} }},
			{name: "handshake", attach: func() func() {
				h.attach(b, true)
				return func() { h.attach(b, false) }
			}},
			{name: "noop", attach: func() func() { return h.attachPair(b, noopIn, noopOut) }},
		}
		var ratios, noopRatios []float64
		for round := range 6 {
			for i := range configs {
				c := configs[(round+i)%len(configs)]
				detach := c.attach()
				c.rps = append(c.rps, h.wrk(b, close))
				detach()
			}
			off, on, nop := configs[0].rps[round], configs[1].rps[round], configs[2].rps[round]
			ratios, noopRatios = append(ratios, on/off), append(noopRatios, nop/off)
			b.Logf("close=%v round %d: without %.0f, handshake %.0f, noop %.0f req/s; ratio %.3f (noop %.3f)", close, round, off, on, nop, on/off, nop/off)
		}
		mode := "keep-alive"
		if close {
			mode = "new connection per request"
		}
		b.Logf("%s: without %.0f req/s, with the handshake programs %.0f req/s, with no-op programs %.0f req/s (medians); ratio %.3f (median of per-round ratios; min %.3f, max %.3f); no-op ratio %.3f",
			mode, median(configs[0].rps), median(configs[1].rps), median(configs[2].rps), median(ratios), slices.Min(ratios), slices.Max(ratios), median(noopRatios))
		b.ReportMetric(median(ratios), map[bool]string{false: "keepalive-ratio", true: "close-ratio"}[close])
	}
}

// noopProg is a tc program that only returns TCX_NEXT.
func (h *hsBench) noopProg(b *testing.B) *ebpf.Program {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// attachPair attaches in first on eth1's tcx ingress and out last on its
// egress, as the handshake programs are.
func (h *hsBench) attachPair(b *testing.B, in, out *ebpf.Program) (detach func()) {
	eth1 := h.tp.Srv.Ifindex(b, "eth1")
	var links []link.Link
	if err := h.tp.Srv.Do(b, func() error {
		for _, a := range []struct {
			p      *ebpf.Program
			at     ebpf.AttachType
			anchor link.Anchor
		}{{in, ebpf.AttachTCXIngress, link.Head()}, {out, ebpf.AttachTCXEgress, link.Tail()}} {
			l, err := link.AttachTCX(link.TCXOptions{Interface: int(eth1), Program: a.p, Attach: a.at, Anchor: a.anchor})
			if err != nil {
				return err
			}
			links = append(links, l)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return func() {
		for _, l := range links {
			l.Close()
		}
	}
}

// BenchmarkHandshakeProgramCost is the handshake tc programs' cost per
// packet under real traffic (wrk keep-alive through nginx over eth1, as in
// BenchmarkHandshakePrograms), from the kernel's BPF statistics, beside two
// pairs of programs attached the same way (tcx ingress first, egress last
// on eth1): "noop" only returns, so its figure is the statistics' own cost
// per run (two clock reads) and the tcx dispatch, which are in every
// figure; "touch" reads the TCP flags byte in place and returns, so its
// figure adds the first read of the packet's headers (a cache miss that
// the stack would otherwise take a little later). 6 rounds, the order of
// the three rotating.
//
//	go test -run '^$' -bench HandshakeProgramCost -benchtime 1x ./tests/
func BenchmarkHandshakeProgramCost(b *testing.B) {
	h := newHSBench(b)
	prog := func(insns asm.Instructions) *ebpf.Program {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	}
	noop := asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}
	// R2 = skb->data, R3 = skb->data_end; read byte 47 (the TCP flags
	// behind Ethernet and IPv4 headers) when it is there.
	touch := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 76, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 80, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 48),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R0, asm.R2, 47, asm.Byte),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("out"),
		asm.Return(),
	}
	attachPair := func(in, out *ebpf.Program) func() { return h.attachPair(b, in, out) }
	type config struct {
		name   string
		progs  []*ebpf.Program
		attach func() (detach func())
		runs   uint64
		rt     time.Duration
		rps    []float64
	}
	noopIn, noopOut, touchIn, touchOut := prog(noop), prog(noop), prog(touch), prog(touch)
	configs := []*config{
		{name: "handshake", progs: h.m.TCPrograms(), attach: func() func() {
			h.attach(b, true)
			return func() { h.attach(b, false) }
		}},
		{name: "noop", progs: []*ebpf.Program{noopIn, noopOut}, attach: func() func() { return attachPair(noopIn, noopOut) }},
		{name: "touch", progs: []*ebpf.Program{touchIn, touchOut}, attach: func() func() { return attachPair(touchIn, touchOut) }},
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	h.attach(b, false)
	perRun := func(c *config) float64 { return float64(c.rt.Nanoseconds()) / float64(max(c.runs, 1)) }
	for round := range 6 {
		for i := range configs {
			c := configs[(round+i)%len(configs)]
			detach := c.attach()
			r0, t0 := progStats(b, c.progs...)
			c.rps = append(c.rps, h.wrk(b, false))
			r1, t1 := progStats(b, c.progs...)
			detach()
			c.runs, c.rt = c.runs+r1-r0, c.rt+t1-t0
		}
		b.Logf("round %d (cumulative): handshake %.1f, noop %.1f, touch %.1f ns/packet", round,
			perRun(configs[0]), perRun(configs[1]), perRun(configs[2]))
	}
	for _, c := range configs {
		b.Logf("%s: %.1f ns/packet over %d packets (%.0f req/s median)", c.name, perRun(c), c.runs, median(c.rps))
	}
	hs, nop, tch := perRun(configs[0]), perRun(configs[1]), perRun(configs[2])
	b.Logf("handshake - noop: %.1f ns/packet; handshake - touch: %.1f ns/packet", hs-nop, hs-tch)
	b.ReportMetric(hs, "ns/packet")
	b.ReportMetric(nop, "noop-ns/packet")
	b.ReportMetric(tch, "touch-ns/packet")
}
