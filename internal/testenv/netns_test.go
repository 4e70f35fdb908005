package testenv

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNewNSAndCgroup: a namespace of its own (only lo inside), removed at
// cleanup; a cgroup that a started process really runs in, killed and
// removed at cleanup.
func TestNewNSAndCgroup(t *testing.T) {
	var ns *NS
	var cg *Cgroup
	t.Run("create", func(t *testing.T) {
		ns = NewNS(t, "ipngt-testenv")
		var names []string
		if err := ns.Do(t, func() error {
			ifs, err := net.Interfaces()
			for _, i := range ifs {
				names = append(names, i.Name)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(names) != 1 || names[0] != "lo" {
			t.Errorf("interfaces in a new namespace: %v, want [lo]", names)
		}
		if _, err := os.Stat(ns.Path); err != nil {
			t.Fatal(err)
		}

		cg = NewCgroup(t, cgroup2(t))
		cmd := exec.Command("sleep", "60")
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		pids, err := cg.Pids()
		if err != nil || len(pids) != 1 || pids[0] != cmd.Process.Pid {
			t.Errorf("cgroup holds %v (%v), want [%d]", pids, err, cmd.Process.Pid)
		}
	})
	if ns == nil || cg == nil {
		return
	}
	if _, err := os.Stat(ns.Path); !os.IsNotExist(err) {
		t.Errorf("namespace %s left after cleanup: %v", ns.Name, err)
	}
	if _, err := os.Stat(cg.Path); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left after cleanup: %v", cg.Path, err)
	}
}

// cgroup2 is where cgroup2 is mounted (loader.Cgroup2Mount, which this
// package cannot import, is the production answer).
func cgroup2(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[2] == "cgroup2" {
			return f[1]
		}
	}
	Skip(t, "no cgroup2 mount")
	return ""
}
