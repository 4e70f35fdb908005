package tests

import (
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
		t.Errorf("the agent did not log the drop:\n%s", p.out.String())
	}
	tasks, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "task", "*", "status"))
	if err != nil || len(tasks) < 2 {
		t.Fatalf("threads of the agent: %v %v", tasks, err)
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
