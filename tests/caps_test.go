package tests

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/caps"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// TestAgentDropsCapabilities: once the program is attached and the proxy's
// listeners are bound, every thread of the running agent keeps only what
// it still needs (read from /proc/PID/task/*/status), no exec can regain
// more, and the agent still counts, reloads, serves `conns` and detaches.
func TestAgentDropsCapabilities(t *testing.T) {
	t.Run("proxy", func(t *testing.T) {
		e := newLiveEnv(t)
		// The proxy binds listeners on a reload (:80, :443 usually); the
		// pins are below the bpffs root.
		// handshakes.enabled (the default) attaches tc programs to bound
		// devices as they appear: CAP_NET_ADMIN and CAP_BPF stay.
		want := caps.Mask([]caps.Cap{unix.CAP_NET_BIND_SERVICE, unix.CAP_DAC_READ_SEARCH, unix.CAP_NET_ADMIN, unix.CAP_BPF}) | bpfCapNeeded(t)
		checkThreadCaps(t, e.agent, want)
		e.traffic(0)
		checkAfterDrop(t, e.env, e.agent)
	})
	t.Run("bpf-only", func(t *testing.T) {
		e := newEnv(t, "")
		agent := e.startAgent()
		want := caps.Mask([]caps.Cap{unix.CAP_DAC_READ_SEARCH, unix.CAP_NET_ADMIN, unix.CAP_BPF}) | bpfCapNeeded(t)
		checkThreadCaps(t, agent, want)
		e.startTagServer("bpf")
		c, err := e.connect(e.topo.C1, "ipv4")
		if err != nil {
			t.Fatal(err)
		}
		// Socket storage is written only for the agent's own proxy: a
		// server beside the agent finds its stamp by socket cookie.
		if c.reply.Tag != "tag1" || c.reply.Method != "cookie" {
			t.Errorf("connection after the drop: %+v, want tag1 by cookie", c.reply)
		}
		checkAfterDrop(t, e, agent)
	})
}

// TestProxyDropsCapabilities: `ipng-stats proxy` serves the network like
// the agent, so it drops too once its listeners are bound and (mode bpf)
// the agent's pins are opened: every thread keeps only
// CAP_NET_BIND_SERVICE, for a reload that binds a new listener below port
// 1024 (and CAP_BPF where the kernel refuses map access without it). Then
// a SIGHUP that adds a listener on a low port binds it, and requests on the
// old and the new listener are served and counted with their interface's
// tag, found in the agent's maps through the descriptors the proxy kept
// (mode bpf: no attribution fallback).
func TestProxyDropsCapabilities(t *testing.T) {
	for _, mode := range []string{"bpf", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			e := newProxyEnvMode(t, proxyYAML, mode)
			keep := caps.Mask([]caps.Cap{unix.CAP_NET_BIND_SERVICE})
			if mode == "bpf" {
				keep |= bpfCapNeeded(t)
			}
			checkThreadCaps(t, e.proc, keep)

			want := map[string]uint64{}
			send := func(port int) {
				t.Helper()
				for _, cl := range []struct {
					ns  *topo.NS
					dev string
				}{{e.topo.C1, "eth1"}, {e.topo.C2, "eth2"}} {
					c := proxyClient(cl.ns)
					for _, fam := range []string{"ipv4", "ipv6"} {
						resp, err := c.Get(e.url(fam, port, "/status/200"))
						if err != nil {
							t.Fatalf("%s %s port %d after the drop: %v", cl.dev, fam, port, err)
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							t.Errorf("%s %s port %d: status %d", cl.dev, fam, port, resp.StatusCode)
						}
						vip := e.topo.VIP4.String()
						if fam == "ipv6" {
							vip = e.topo.VIP6.String()
						}
						want[expectedTag(cl.dev, fam)+" "+vip+" 2xx"]++
					}
					c.CloseIdleConnections()
				}
			}
			send(e.port)
			e.waitCounts(maps.Clone(want))

			low := lowFreePort(t, e.topo.Srv)
			e.writeProxyConfig(strings.Replace(proxyYAML, "  upstreams:\n",
				fmt.Sprintf("    - address: \":%d\"\n      upstream: web\n  upstreams:\n", low), 1))
			e.proc.cmd.Process.Signal(syscall.SIGHUP)
			testenv.Eventually(t, 20*time.Second, func() bool {
				out := e.proc.out.String()
				return strings.Contains(out, `msg="proxy reloaded"`) || strings.Contains(out, "proxy reload failed")
			}, "the proxy's reload")
			if out := e.proc.out.String(); strings.Contains(out, "proxy reload failed") {
				t.Fatalf("reload binding :%d after the drop failed:\n%s", low, out)
			}
			send(low)
			send(e.port)
			e.waitCounts(want)
			if mode == "bpf" {
				d, err := e.stats()
				if err != nil {
					t.Fatal(err)
				}
				for reason, n := range d.Meta.AttributionFallbacks {
					if n != 0 {
						t.Errorf("attribution fell back %d times (%s) after the drop: the maps were not read", n, reason)
					}
				}
			}
			checkThreadCaps(t, e.proc, keep)
			e.proc.stop(t, syscall.SIGTERM)
			if err := e.proc.err; err != nil || strings.Contains(e.proc.out.String(), "level=ERROR") {
				t.Errorf("proxy stopped with %v:\n%s", err, e.proc.out.String())
			}
		})
	}
}

// lowFreePort is a port below 1024 that nothing listens on in ns: only a
// process with CAP_NET_BIND_SERVICE may bind it.
func lowFreePort(t *testing.T, ns *topo.NS) int {
	t.Helper()
	for p := 81; p < 1024; p++ {
		ln, err := ns.Listen("tcp", fmt.Sprintf(":%d", p))
		if err == nil {
			ln.Close()
			return p
		}
	}
	t.Fatal("no free port below 1024 in the server's namespace")
	return 0
}

// bpfCapNeeded is CAP_BPF's bit when this kernel refuses bpf(2) on map
// descriptors to a thread without it: before Linux 6.5 with
// kernel.unprivileged_bpf_disabled set.
func bpfCapNeeded(t *testing.T) uint64 {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	parts := strings.SplitN(rel, ".", 3)
	major, _ = strconv.Atoi(parts[0])
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	}
	b, _ := os.ReadFile("/proc/sys/kernel/unprivileged_bpf_disabled")
	if (major < 6 || major == 6 && minor < 5) && strings.TrimSpace(string(b)) != "0" {
		return 1 << unix.CAP_BPF
	}
	return 0
}

// checkThreadCaps reads the capability sets of every thread of p.
func checkThreadCaps(t *testing.T, p *proc, want uint64) {
	t.Helper()
	checkThreadCapSets(t, p, want, want)
}

// checkThreadCapSets is checkThreadCaps with the bounding set apart: an
// agent without CAP_SETPCAP (as under the systemd unit) keeps its
// bounding set (bnd), and no_new_privs stops an exec from using it.
func checkThreadCapSets(t *testing.T, p *proc, want, bnd uint64) {
	t.Helper()
	if !strings.Contains(p.out.String(), `msg="capabilities dropped"`) {
		t.Errorf("%s did not log the drop:\n%s", p.name, p.out.String())
	}
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "task", "*", "status"))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads of %s: %v %v", p.name, tasks, err)
	}
	for _, f := range tasks {
		s, err := caps.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if s.Eff != want || s.Prm != want || s.Bnd != bnd || s.Inh != 0 || s.Amb != 0 {
			t.Errorf("%s: CapEff %016x CapPrm %016x CapBnd %016x CapInh %016x CapAmb %016x, want %016x %016x %016x 0 0",
				f, s.Eff, s.Prm, s.Bnd, s.Inh, s.Amb, want, want, bnd)
		}
		b, _ := os.ReadFile(f)
		if !strings.Contains(string(b), "NoNewPrivs:\t1") {
			t.Errorf("%s: no_new_privs not set", f)
		}
	}
}

// checkAfterDrop: with the reduced set the agent reloads, its pins serve
// `conns`, and SIGTERM detaches and removes them.
func checkAfterDrop(t *testing.T, e *env, p *proc) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 20*time.Second, func() bool { return strings.Contains(p.out.String(), "configuration reloaded") }, "reload")
	if _, err := e.ipngStats("conns", "--bpf.pin-dir", e.pinDir); err != nil {
		t.Errorf("conns after the drop: %v", err)
	}
	p.stop(t, syscall.SIGTERM)
	out := p.out.String()
	if !strings.Contains(out, "sock_ops program detached") || strings.Contains(out, "level=ERROR") {
		t.Errorf("stop after the drop:\n%s", out)
	}
	if _, err := os.Stat(e.pinDir); !os.IsNotExist(err) {
		t.Errorf("pin directory left after SIGTERM: %v", err)
	}
}
