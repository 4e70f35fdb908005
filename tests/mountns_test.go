package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestAgentUnderIPNetnsExecNoHostBPFFS: under `ip netns exec` on a host
// that has no bpffs at /sys/fs/bpf either, the agent in mode bpf neither
// pins into a bpffs of its own namespace (invisible to the host, lost at
// exit) nor runs without BPF: it exits non-zero, naming the cause (a
// private mount namespace) and the fixes (mount one on the host, or run it
// with nsenter --net in the host's mount namespace). The host stands in as
// a mount and PID namespace of the test's own (unshare, private
// propagation) with /sys/fs/bpf unmounted: the real host's is untouched.
func TestAgentUnderIPNetnsExecNoHostBPFFS(t *testing.T) {
	topo.Require(t)
	name := "ipngt-" + testenv.RandomID()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	pinDir := topo.PinDir(t)
	// sh is PID 1 of the new PID namespace, the agent's parent, in the
	// "host" mount namespace: the agent compares its own with it. A
	// bounded loop unmounts every bpffs stacked at /sys/fs/bpf there.
	script := `for i in 1 2 3 4 5 6 7 8; do mountpoint -q /sys/fs/bpf || break; umount -l /sys/fs/bpf || exit 90; done
mountpoint -q /sys/fs/bpf && exit 91
ip netns exec "$1" "$2" agent --bpf.pin-dir "$3" --attribution.mode bpf --web.listen-address 127.0.0.1:0
echo "agent exit status $?"`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
		"--mount-proc", "sh", "-c", script, "sh", name, agentBin, pinDir)
	out, err := cmd.CombinedOutput()
	log := string(out)
	if err != nil || ctx.Err() != nil {
		t.Fatalf("the stand-in host: %v (%v)\n%s", err, ctx.Err(), log)
	}
	if strings.Contains(log, "agent exit status 0") || !strings.Contains(log, "agent exit status") {
		t.Fatalf("the agent did not exit with an error:\n%s", log)
	}
	for _, want := range []string{"private mount namespace", "no bpf filesystem at /sys/fs/bpf",
		"mount -t bpf bpf /sys/fs/bpf", "nsenter --net="} {
		if !strings.Contains(log, want) {
			t.Errorf("the agent's error lacks %q:\n%s", want, log)
		}
	}
	for _, never := range []string{"sock_ops program attached", "agent running", "mounted the host's bpf filesystem"} {
		if strings.Contains(log, never) {
			t.Errorf("the agent logged %q:\n%s", never, log)
		}
	}
	// Nothing was pinned on the real host.
	if _, err := os.Stat(pinDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory on the host: %v", err)
	}
}
