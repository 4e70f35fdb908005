package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
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
	cg  string // nginx's cgroup, where the Monitor attaches its SYN-ACK program
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
	ngx := tp.Srv.Exec(context.Background(), "taskset", "-c", hsNginxCPU, "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;")
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
	return &hsBench{tp: tp, m: m, url: url, cg: cg.Path}
}

// wrk runs wrk -t1 -c32 -d2s from c1, pinned to hsWrkCPU, and returns its
// requests and what the CPUs did meanwhile.
func (h *hsBench) wrk(b *testing.B, close bool) wrkRun {
	args := []string{"-c", hsWrkCPU, "wrk", "-t1", "-c32", "-d2s"}
	if close {
		args = append(args, "-H", "Connection: close")
	}
	busy0, idle0, steal0 := procStat(b)
	out, err := h.tp.C1.Exec(context.Background(), "taskset", append(args, h.url)...).CombinedOutput()
	busy1, idle1, steal1 := procStat(b)
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	if e := regexp.MustCompile(`(Socket errors|Non-2xx).*`).Find(out); e != nil {
		b.Logf("wrk: %s", e) // counted by wrk, not in its Requests/sec
	}
	mm := regexp.MustCompile(`(?s)([0-9]+) requests in .*Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
	if mm == nil {
		b.Fatalf("wrk output: %s", out)
	}
	r := wrkRun{busy: busy1 - busy0, idle: idle1 - idle0, steal: steal1 - steal0}
	r.requests, _ = strconv.ParseFloat(string(mm[1]), 64)
	r.rps, _ = strconv.ParseFloat(string(mm[2]), 64)
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

// hsRounds is how many measured rounds BenchmarkHandshakePrograms runs per
// mode, after one discarded warm-up round: a multiple of 4, so that every
// arm takes every position of the round equally often (hsOrders).
var hsRounds = map[bool]int{false: 12, true: 24}

// hsOrders is a Williams square for the four arms of
// BenchmarkHandshakePrograms: round r runs them in the order hsOrders[r%4].
// Over 4 rounds each arm runs once in each position and follows each other
// arm exactly once, so a drift of the machine during the run, and whatever
// one arm leaves behind for the next (a detach finishing), falls on every
// arm alike.
var hsOrders = [4][4]int{{0, 1, 3, 2}, {1, 2, 0, 3}, {2, 3, 1, 0}, {3, 0, 2, 1}}

// hsOrders3 are the six orders of three arms (BenchmarkHandshakeProgramCost).
var hsOrders3 = [6][3]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}, {0, 2, 1}, {2, 0, 1}, {1, 0, 2}}

// The CPUs wrk and nginx are pinned to (taskset), the same for every arm:
// left to the scheduler, both move between the two vCPUs from run to run,
// and with them where the softirq work of each direction runs.
const hsWrkCPU, hsNginxCPU = "0", "1"

// BenchmarkHandshakePrograms measures what the handshake tc programs cost
// nginx (docs/benchmarks.md): nginx (1 worker, `return 200`, pinned to CPU
// 1) in srv, wrk (1 thread, 32 connections, 2 s, pinned to CPU 0) from c1
// over the bound veth eth1, in four arms: without programs on eth1
// ("without"), with the handshake programs attached to it ("handshake"),
// with a pair of programs that only return attached the same way ("noop":
// the cost of having tcx programs on the device at all), and without
// programs again ("without again": an A/A control, the same configuration
// as "without", whose ratio to it shows what the method resolves). Per
// mode (keep-alive, then a new connection per request) one warm-up round
// is discarded and hsRounds rounds follow, in the orders of hsOrders. Each
// round gives a ratio per arm against "without" of the same round (and
// handshake ÷ noop); the figures are the median of these ratios, their
// interquartile range and a bootstrap 95 % interval of the median. Beside
// req/s it reports the CPU time (all CPUs, from /proc/stat) per request.
// The kernel's BPF statistics must stay off (they add two clock reads to
// every run of an attached program, BenchmarkHandshakeProgramCost measures
// them): the benchmark fails if the programs' run counters move. It runs
// once whatever b.N is; use -benchtime 1x.
//
//	go test -run '^$' -bench 'HandshakePrograms$' -benchtime 1x ./tests/
func BenchmarkHandshakePrograms(b *testing.B) {
	h := newHSBench(b)
	if on, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled"); err == nil && len(on) > 0 && on[0] != '0' {
		b.Fatal("kernel.bpf_stats_enabled is on: every run of the programs would include the statistics' clock reads")
	}
	noopIn, noopOut := h.noopProg(b), h.noopProg(b)
	type arm struct {
		name   string
		progs  []*ebpf.Program
		attach func() (detach func())
		runs   []wrkRun
	}
	none := func() func() { return func() {} }
	for _, close := range []bool{false, true} {
		arms := []*arm{
			{name: "without", attach: none},
			{name: "handshake", progs: h.m.TCPrograms(), attach: func() func() {
				h.attach(b, true)
				return func() { h.attach(b, false) }
			}},
			{name: "noop", progs: []*ebpf.Program{noopIn, noopOut}, attach: func() func() { return h.attachPair(b, noopIn, noopOut) }},
			{name: "without again", attach: none},
		}
		mode := "keep-alive"
		if close {
			mode = "new connection per request"
		}
		type series struct {
			name string
			v    []float64
		}
		ratios := []*series{{name: "handshake ÷ without, req/s"}, {name: "noop ÷ without, req/s"},
			{name: "without again ÷ without, req/s (A/A)"}, {name: "handshake ÷ noop, req/s"},
			{name: "handshake ÷ without, CPU per request"}, {name: "noop ÷ without, CPU per request"},
			{name: "without again ÷ without, CPU per request (A/A)"}}
		for round := -1; round < hsRounds[close]; round++ {
			var got [4]wrkRun
			for _, i := range hsOrders[(round+4)%4] {
				a := arms[i]
				detach := a.attach()
				r0, _ := progStats(b, a.progs...)
				got[i] = h.wrk(b, close)
				r1, _ := progStats(b, a.progs...)
				detach()
				if r1 != r0 {
					b.Fatalf("%s: the programs' run counter moved (%d runs): the kernel's BPF statistics are on (another process holds them)", a.name, r1-r0)
				}
			}
			if round < 0 {
				b.Logf("%s: warm-up round (discarded): without %.0f, handshake %.0f, noop %.0f, without again %.0f req/s",
					mode, got[0].rps, got[1].rps, got[2].rps, got[3].rps)
				continue
			}
			for i := range arms {
				arms[i].runs = append(arms[i].runs, got[i])
			}
			for i, v := range []float64{got[1].rps / got[0].rps, got[2].rps / got[0].rps, got[3].rps / got[0].rps, got[1].rps / got[2].rps,
				got[1].cpuPerReq() / got[0].cpuPerReq(), got[2].cpuPerReq() / got[0].cpuPerReq(), got[3].cpuPerReq() / got[0].cpuPerReq()} {
				ratios[i].v = append(ratios[i].v, v)
			}
			b.Logf("%s round %2d %v: req/s %.0f %.0f %.0f %.0f; ratios %.3f %.3f %.3f; CPU µs/req %.2f %.2f %.2f %.2f; busy %.0f%%; TIME_WAIT srv %d, c1 %d",
				mode, round, hsOrders[round%4], got[0].rps, got[1].rps, got[2].rps, got[3].rps,
				ratios[0].v[round], ratios[1].v[round], ratios[2].v[round],
				got[0].cpuPerReq()*1e6, got[1].cpuPerReq()*1e6, got[2].cpuPerReq()*1e6, got[3].cpuPerReq()*1e6,
				got[0].busyPct(), timeWait(b, h.tp.Srv), timeWait(b, h.tp.C1))
		}
		for _, a := range arms {
			var rps, cpu, steal []float64
			for _, r := range a.runs {
				rps, cpu, steal = append(rps, r.rps), append(cpu, r.cpuPerReq()*1e6), append(steal, r.stealPct())
			}
			b.Logf("%s, %s: median %.0f req/s (IQR %.0f–%.0f), CPU %.2f µs/req, steal %.1f%%", mode, a.name,
				quantile(rps, 0.5), quantile(rps, 0.25), quantile(rps, 0.75), quantile(cpu, 0.5), quantile(steal, 0.5))
		}
		for _, r := range ratios {
			lo, hi := bootstrapMedian(r.v)
			b.Logf("%s, %s: median %.3f, IQR %.3f–%.3f, bootstrap 95%% interval of the median %.3f–%.3f, min %.3f, max %.3f (%d rounds)",
				mode, r.name, quantile(r.v, 0.5), quantile(r.v, 0.25), quantile(r.v, 0.75), lo, hi, slices.Min(r.v), slices.Max(r.v), len(r.v))
		}
		unit := map[bool]string{false: "keepalive", true: "close"}[close]
		b.ReportMetric(quantile(ratios[0].v, 0.5), unit+"-ratio")
		b.ReportMetric(quantile(ratios[1].v, 0.5), unit+"-noop-ratio")
		b.ReportMetric(quantile(ratios[2].v, 0.5), unit+"-aa-ratio")
	}
}

// wrkRun is one run of wrk: its requests per second and what the machine's
// CPUs did meanwhile (/proc/stat, in USER_HZ ticks).
type wrkRun struct {
	rps               float64
	requests          float64
	busy, idle, steal float64
}

// cpuPerReq is the CPU time (seconds, all CPUs, steal excluded) per request.
func (r wrkRun) cpuPerReq() float64 { return r.busy / 100 / r.requests }

func (r wrkRun) busyPct() float64 { return 100 * r.busy / (r.busy + r.idle + r.steal) }

func (r wrkRun) stealPct() float64 { return 100 * r.steal / (r.busy + r.idle + r.steal) }

// procStat returns the busy, idle and steal ticks of all CPUs so far.
func procStat(b *testing.B) (busy, idle, steal float64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: %q", line)
	}
	v := make([]float64, 9)
	for i := 1; i < 9; i++ {
		v[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return v[1] + v[2] + v[3] + v[6] + v[7], v[4] + v[5], v[8]
}

// timeWait is the number of TCP sockets in TIME_WAIT in ns.
func timeWait(b *testing.B, ns *topo.NS) int {
	var n int
	if err := ns.Do(b, func() error {
		data, err := os.ReadFile("/proc/thread-self/net/sockstat")
		if err != nil {
			return err
		}
		m := regexp.MustCompile(`TCP: .* tw ([0-9]+)`).FindSubmatch(data)
		if m == nil {
			return fmt.Errorf("sockstat: %q", data)
		}
		n, err = strconv.Atoi(string(m[1]))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return n
}

// quantile is the q-quantile of v, interpolated between the closest ranks.
func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	x := q * float64(len(s)-1)
	i := int(x)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (x-float64(i))*(s[i+1]-s[i])
}

// bootstrapMedian is a percentile bootstrap 95 % interval of the median of
// v (10 000 resamples, fixed seed: the same rounds give the same interval).
func bootstrapMedian(v []float64) (lo, hi float64) {
	rng := rand.New(rand.NewPCG(1, 2))
	meds := make([]float64, 10000)
	s := make([]float64, len(v))
	for i := range meds {
		for j := range s {
			s[j] = v[rng.IntN(len(v))]
		}
		meds[i] = quantile(s, 0.5)
	}
	return quantile(meds, 0.025), quantile(meds, 0.975)
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
// packet and per request under real traffic (wrk through nginx over eth1,
// as in BenchmarkHandshakePrograms, keep-alive and a new connection per
// request), from the kernel's BPF statistics, beside two pairs of programs
// attached the same way (tcx ingress first, egress last on eth1): "noop"
// only returns, so its figure is the statistics' own cost per run (two
// clock reads) and the tcx dispatch, which are in every figure; "touch"
// reads the TCP flags byte in place and returns, so its figure adds the
// first read of the packet's headers (a cache miss that the stack would
// otherwise take a little later). 6 rounds per mode, the order of the three
// arms cycling through all six permutations. What the handshake programs
// add per request (handshake − noop, per packet, times the packets per
// request) is set against the CPU time per request of the same runs
// (/proc/stat): the share of the machine's work that the programs are. The
// SYN-ACK (sock_ops) program, which the handshake arm attaches to nginx's
// cgroup, is read the same way against a sock_ops program that only
// returns, attached in the no-op arm: ns per call, and calls per request
// (the sock_ops callbacks of a connection, every one of which runs every
// program of the cgroup).
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
		name     string
		progs    []*ebpf.Program
		skops    *ebpf.Program // the arm's sock_ops program on nginx's cgroup
		attach   func() (detach func())
		runs     uint64
		rt       time.Duration
		skRuns   uint64
		skRt     time.Duration
		requests float64
		cpu      float64 // seconds of CPU time, all CPUs
		rps      []float64
	}
	noopIn, noopOut, touchIn, touchOut := prog(noop), prog(noop), prog(touch), prog(touch)
	// The no-op arm also attaches a sock_ops program that only returns to
	// nginx's cgroup, beside the handshake arm's SYN-ACK program: its
	// statistics are their floor per call, and its calls per request are
	// the sock_ops callbacks a connection makes.
	noopSkops, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SockOps, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { noopSkops.Close() })
	attachNoop := func() func() {
		detach := attachPair(noopIn, noopOut)
		l, err := link.AttachCgroup(link.CgroupOptions{Path: h.cg, Attach: ebpf.AttachCGroupSockOps, Program: noopSkops})
		if err != nil {
			b.Fatal(err)
		}
		return func() { l.Close(); detach() }
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	h.attach(b, false)
	perRun := func(c *config) float64 { return float64(c.rt.Nanoseconds()) / float64(max(c.runs, 1)) }
	skPerRun := func(c *config) float64 { return float64(c.skRt.Nanoseconds()) / float64(max(c.skRuns, 1)) }
	for _, close := range []bool{false, true} {
		mode := map[bool]string{false: "keep-alive", true: "new connection per request"}[close]
		configs := []*config{
			{name: "handshake", progs: h.m.TCPrograms(), skops: h.m.SockopsProgram(), attach: func() func() {
				h.attach(b, true)
				return func() { h.attach(b, false) }
			}},
			{name: "noop", progs: []*ebpf.Program{noopIn, noopOut}, skops: noopSkops, attach: attachNoop},
			{name: "touch", progs: []*ebpf.Program{touchIn, touchOut}, attach: func() func() { return attachPair(touchIn, touchOut) }},
		}
		for round := range 6 {
			for _, i := range hsOrders3[round] {
				c := configs[i]
				detach := c.attach()
				r0, t0 := progStats(b, c.progs...)
				var sr0, st0, sr1, st1 = uint64(0), time.Duration(0), uint64(0), time.Duration(0)
				if c.skops != nil {
					sr0, st0 = progStats(b, c.skops)
				}
				w := h.wrk(b, close)
				r1, t1 := progStats(b, c.progs...)
				if c.skops != nil {
					sr1, st1 = progStats(b, c.skops)
				}
				detach()
				c.runs, c.rt = c.runs+r1-r0, c.rt+t1-t0
				c.skRuns, c.skRt = c.skRuns+sr1-sr0, c.skRt+st1-st0
				c.requests, c.cpu = c.requests+w.requests, c.cpu+w.busy/100
				c.rps = append(c.rps, w.rps)
			}
			b.Logf("%s round %d (cumulative): handshake %.1f, noop %.1f, touch %.1f ns/packet", mode, round,
				perRun(configs[0]), perRun(configs[1]), perRun(configs[2]))
		}
		for _, c := range configs {
			b.Logf("%s, %s: %.1f ns/packet over %d packets, %.2f packets/request, CPU %.2f µs/request (%.0f req/s median)",
				mode, c.name, perRun(c), c.runs, float64(c.runs)/c.requests, c.cpu/c.requests*1e6, median(c.rps))
		}
		hs, nop, tch := perRun(configs[0]), perRun(configs[1]), perRun(configs[2])
		pkts := float64(configs[0].runs) / configs[0].requests
		cpu := configs[0].cpu / configs[0].requests * 1e9
		b.Logf("%s: handshake − noop %.1f ns/packet, handshake − touch %.1f ns/packet; × %.2f packets/request = %.0f ns/request of %.0f ns CPU/request: %.2f %%",
			mode, hs-nop, hs-tch, pkts, (hs-nop)*pkts, cpu, 100*(hs-nop)*pkts/cpu)
		// The SYN-ACK (sock_ops) program: its statistics per call against
		// the no-op sock_ops program's, times its calls per request.
		skHs, skNop := skPerRun(configs[0]), skPerRun(configs[1])
		skCalls := float64(configs[0].skRuns) / configs[0].requests
		b.Logf("%s: sock_ops: SYN-ACK program %.1f ns/call over %d calls (%.2f calls/request), no-op %.1f ns/call over %d calls (%.2f calls/request); SYN-ACK − no-op %.1f ns/call × %.2f calls/request = %.0f ns/request; with the no-op's figure (statistics and dispatch) %.0f ns/request",
			mode, skHs, configs[0].skRuns, skCalls, skNop, configs[1].skRuns, float64(configs[1].skRuns)/configs[1].requests,
			skHs-skNop, skCalls, (skHs-skNop)*skCalls, skHs*skCalls)
		unit := map[bool]string{false: "keepalive", true: "close"}[close]
		b.ReportMetric(skHs, unit+"-sockops-ns/call")
		b.ReportMetric(skCalls, unit+"-sockops-calls/request")
		b.ReportMetric(hs, unit+"-ns/packet")
		b.ReportMetric(nop, unit+"-noop-ns/packet")
		b.ReportMetric(tch, unit+"-touch-ns/packet")
		b.ReportMetric((hs-nop)*pkts, unit+"-extra-ns/request")
	}
}

// BenchmarkHandshakeProfile shows where the CPU time goes with a new
// connection per request (BenchmarkHandshakePrograms' setup): `perf record
// -a` (cpu-clock, 999 Hz, both CPUs) around a 3 s wrk run without programs
// on eth1, with no-op programs and with the handshake programs, 2 rounds in
// rotating order; per arm it logs the symbols with at least 0.3 % of the
// samples and the share of all symbols of the tc hook's and the programs' own symbols.
//
//	go test -run '^$' -bench HandshakeProfile -benchtime 1x ./tests/
func BenchmarkHandshakeProfile(b *testing.B) {
	if _, err := exec.LookPath("perf"); err != nil {
		testenv.Skip(b, "perf not installed")
	}
	h := newHSBench(b)
	noopIn, noopOut := h.noopProg(b), h.noopProg(b)
	arms := []struct {
		name   string
		attach func() (detach func())
	}{
		{"without", func() func() { return func() {} }},
		{"handshake", func() func() {
			h.attach(b, true)
			return func() { h.attach(b, false) }
		}},
		{"noop", func() func() { return h.attachPair(b, noopIn, noopOut) }},
	}
	dir := b.TempDir()
	files := map[string][]string{}
	for round := range 2 {
		for _, i := range hsOrders3[round] {
			a := arms[i]
			f := filepath.Join(dir, fmt.Sprintf("%s-%d.data", a.name, round))
			detach := a.attach()
			out, err := exec.Command("perf", "record", "-a", "-e", "cpu-clock", "-F", "999", "-o", f, "--",
				"nsenter", "--net="+h.tp.C1.Path, "taskset", "-c", hsWrkCPU, "wrk", "-t1", "-c32", "-d3s", "-H", "Connection: close", h.url).CombinedOutput()
			detach()
			if err != nil {
				b.Fatalf("perf record: %v\n%s", err, out)
			}
			if m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out); m != nil {
				b.Logf("%s round %d: %s req/s", a.name, round, m[1])
			}
			files[a.name] = append(files[a.name], f)
		}
	}
	hook := regexp.MustCompile(`tcx|sch_handle|bpf_prog|bpf_mprog|ipng_|tc_run|bpf_skb|htab|bpf_lru|__bpf`)
	for _, a := range arms {
		for _, f := range files[a.name] {
			out, err := exec.Command("perf", "report", "-i", f, "--stdio", "--no-children", "--sort", "sym", "-q", "--percent-limit", "0.01").CombinedOutput()
			if err != nil {
				b.Fatalf("perf report: %v\n%s", err, out)
			}
			var share float64
			var hooks, top []string
			for _, l := range strings.Split(string(out), "\n") {
				fs := strings.Fields(l)
				if len(fs) == 0 {
					continue
				}
				pct, _ := strconv.ParseFloat(strings.TrimSuffix(fs[0], "%"), 64)
				if hook.MatchString(l) {
					share += pct
					hooks = append(hooks, strings.Join(fs, " "))
				}
				if pct >= 0.3 {
					top = append(top, strings.Join(fs, " "))
				}
			}
			b.Logf("%s (%s): tc hook and program symbols %.2f %% of the samples: %q\ntop: %q", a.name, filepath.Base(f), share, hooks, top)
		}
	}
}
