package loader

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// BenchmarkSockopsRunTime measures the kernel-side cost of the sock_ops
// program from the kernel's own BPF statistics (kernel.bpf_stats_enabled):
// one op is one loopback connection accepted and closed by this process.
// The program runs for every sock_ops callback of both ends (timeouts, RTT,
// state changes, ...), not only when a socket is accepted, so the same loop
// also runs with a program that only returns, and the difference is what
// stamping costs. Reported: sockops-ns/call (mean per invocation) and
// sockops-ns/conn (program time per accepted connection).
func BenchmarkSockopsRunTime(b *testing.B) {
	testenv.RequireRoot(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enabling BPF run-time statistics: %v", err)
	}
	defer stats.Close()
	cgroup := processCgroup(b)

	b.Run("noop", func(b *testing.B) {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.SockOps,
			License:      "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		})
		if err != nil {
			b.Fatal(err)
		}
		defer prog.Close()
		l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: ebpf.AttachCGroupSockOps, Program: prog})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		connectLoop(b)
		reportStats(b, prog, uint64(b.N))
	})
	b.Run("ipng", func(b *testing.B) {
		p, err := Load(Config{Cgroup: cgroup, PinDir: filepath.Join(DefaultBPFFS, "ipng-bench-"+strconv.Itoa(os.Getpid()))}, nil)
		if err != nil {
			b.Fatalf("%+v", err)
		}
		defer p.Close()
		connectLoop(b)
		counters, err := p.Maps().ReadCounters()
		if err != nil {
			b.Fatal(err)
		}
		reportStats(b, p.objs.IpngSockops, counters["stamped"])
	})
}

// connectLoop accepts and closes b.N loopback connections.
func connectLoop(b *testing.B) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(b.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		c.Close()
	}
}

func reportStats(b *testing.B, prog *ebpf.Program, accepted uint64) {
	st, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	if st.RunCount == 0 || accepted == 0 {
		b.Fatalf("no program runs recorded (calls %d, accepted %d)", st.RunCount, accepted)
	}
	b.ReportMetric(float64(st.Runtime.Nanoseconds())/float64(st.RunCount), "sockops-ns/call")
	b.ReportMetric(float64(st.Runtime.Nanoseconds())/float64(accepted), "sockops-ns/conn")
}

func processCgroup(b *testing.B) string {
	cg, err := ProcessCgroup()
	if err != nil {
		b.Fatal(err)
	}
	return cg
}
