package loader

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/family"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// BenchmarkSockopsRunTime measures the kernel-side cost of the sock_ops
// program from the kernel's own BPF statistics (kernel.bpf_stats_enabled):
// one op is one loopback connection accepted and closed by this process.
// The program runs for every sock_ops callback of both ends (timeouts, RTT,
// state changes, ...), not only when a socket is accepted, so the same loop
// also runs with a program that only returns, and the difference is what
// stamping costs. The program runs with what the agent does beside it (the
// interfaces' tags written to ipng_ifaces, the connection counts read once a
// second): there is no per-connection consumer any more. "ipng" is the
// default configuration, "ipng+tuples" the nginx-ingest configuration (the
// 4-tuple map written too), "ipng+sk" the agent's own proxy with BPF
// attribution (socket storage written too). Reported: sockops-ns/call
// (mean per invocation) and sockops-ns/conn (program time per accepted
// connection; the client's callbacks are included, as the client is local).
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
	for _, arm := range []struct {
		name       string
		tuples, sk bool
	}{{"ipng", false, false}, {"ipng+tuples", true, false}, {"ipng+sk", false, true}} {
		b.Run(arm.name, func(b *testing.B) {
			p, err := Load(Config{Cgroup: cgroup, Tuples: arm.tuples, SkStorage: arm.sk,
				PinDir: filepath.Join(DefaultBPFFS, "ipng-bench-"+strconv.Itoa(os.Getpid()))}, nil)
			if err != nil {
				b.Fatalf("%+v", err)
			}
			defer p.Close()
			stop := runConsumer(b, p)
			connectLoop(b)
			stop()
			counters, err := p.Maps().ReadCounters()
			if err != nil {
				b.Fatal(err)
			}
			reportStats(b, p.objs.IpngSockops, counters["stamped"])
		})
	}
}

// runConsumer does what the agent does beside the program: it tells the
// program the tag of every link (so that stamps copy a tag and a device) and
// reads the connection counts once a second. The returned func stops it.
func runConsumer(b *testing.B, p *Program) func() {
	tt, err := NewTagTable(p.Maps())
	if err != nil {
		b.Fatal(err)
	}
	ifs, err := net.Interfaces()
	if err != nil {
		b.Fatal(err)
	}
	var ifaces []Iface
	for _, i := range ifs {
		tag, bound := "direct", i.Name == "lo"
		if bound {
			tag = "loopback"
		}
		for _, fam := range []family.Family{family.IPv4, family.IPv6} {
			ifaces = append(ifaces, Iface{Ifindex: uint32(i.Index), Family: fam, Device: i.Name, Tag: tag, Bound: bound})
		}
	}
	if err := tt.Sync(ifaces); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if _, err := p.Maps().ReadConns(); err != nil {
					b.Error(err)
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
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
