package tests

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/loader"
)

// TestAgentUnderIPNetnsExec: `ip netns exec` gives the agent a private
// mount namespace with a /sys of its own (no cgroup2, no bpffs). In mode
// bpf the agent must not run on a private bpffs nor give up: it mounts a
// cgroup2 view and the host's bpffs, so its pins are the host's (`conns`
// on the host reads them) and SIGTERM removes them there.
func TestAgentUnderIPNetnsExec(t *testing.T) {
	topo.Require(t)
	name := "ipngt-" + testenv.RandomID()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	// What the agent sees without help.
	out, err := exec.Command("ip", "netns", "exec", name, "stat", "-f", "-c", "%T", "/sys/fs/bpf").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) == "bpf_fs" {
		t.Fatalf("ip netns exec shows %q for /sys/fs/bpf (%v): the test needs a private /sys", out, err)
	}

	cg := topo.NewCgroup(t)
	mnt, err := loader.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(mnt, cg.Path) // the same below the agent's own cgroup2 mount
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t}
	e.pinDir = topo.PinDir(t)
	agent := e.start("agent", exec.CommandContext(context.Background(), "ip", "netns", "exec", name, agentBin, "agent",
		"--bpf.cgroup", rel, "--bpf.pin-dir", e.pinDir, "--attribution.mode", "bpf",
		"--web.listen-address", "127.0.0.1:9113"), false)
	agent.awaitRunning(t, `msg="agent running"`)
	log := agent.out.String()
	for _, want := range []string{"mounted a cgroup2 view", "mounted the host's bpf filesystem", "private mount namespace", "bpf=true"} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q:\n%s", want, log)
		}
	}
	if !exists(filepath.Join(e.pinDir, loader.PinLink)) {
		t.Fatalf("the agent's pins are not on the host's bpffs:\n%s", log)
	}
	if out, err := exec.Command(agentBin, "conns", "--bpf.pin-dir", e.pinDir).CombinedOutput(); err != nil {
		t.Errorf("conns on the host: %v\n%s", err, out)
	}
	agent.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(e.pinDir); !os.IsNotExist(err) {
		t.Errorf("pins left on the host after SIGTERM: %v\n%s", err, agent.out.String())
	}
	// The mounts were the namespace's own: the host's mount table is as before.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if n := strings.Count(string(mi), " "+loader.DefaultBPFFS+" "); n != 1 {
		t.Errorf("%d mounts at %s on the host after the run", n, loader.DefaultBPFFS)
	}
}
