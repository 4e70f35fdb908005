package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cgroup is a throw-away child cgroup, e.g. for attaching ipng-stats'
// sock_ops program to only the processes a test starts.
type Cgroup struct {
	Path string
}

// NewCgroup creates a uniquely named child "ipngt-<random>" of parent, a
// cgroup2 directory (loader.Cgroup2Mount(), which testenv cannot import:
// the production code and the tests must agree on where cgroup2 is). Its
// cleanup kills every process still in it and removes it. It skips
// (fails under IPNG_STATS_E2E=1) without root.
func NewCgroup(t testing.TB, parent string) *Cgroup {
	t.Helper()
	RequireRoot(t)
	var c *Cgroup
	for try := 0; c == nil; try++ {
		p := filepath.Join(parent, "ipngt-"+RandomID())
		err := os.Mkdir(p, 0o755)
		switch {
		case err == nil:
			c = &Cgroup{Path: p}
		case !errors.Is(err, os.ErrExist) || try == 4:
			t.Fatalf("create cgroup: %v", err)
		}
	}
	t.Cleanup(func() {
		if err := c.remove(10 * time.Second); err != nil {
			t.Errorf("cgroup cleanup: %v", err)
		}
	})
	return c
}

// Start starts cmd directly inside the cgroup (clone3 with
// CLONE_INTO_CGROUP), so not even its first instruction runs outside it.
// Combine with NS.Exec to start a server in srv's namespace and cgroup.
// The caller still owns cmd and should Wait for it; the cgroup's cleanup
// kills whatever is left.
func (c *Cgroup) Start(cmd *exec.Cmd) error {
	fd, err := syscall.Open(c.Path, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", c.Path, err)
	}
	defer syscall.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = fd
	return cmd.Start()
}

// Pids lists the processes in the cgroup (not in its children).
func (c *Cgroup) Pids() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// remove SIGKILLs everything in the cgroup (cgroup.kill where the kernel has
// it, else pid by pid) and removes it, retrying until timeout.
func (c *Cgroup) remove(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := os.WriteFile(filepath.Join(c.Path, "cgroup.kill"), []byte("1"), 0)
		if errors.Is(err, os.ErrNotExist) {
			pids, _ := c.Pids()
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		err = syscall.Rmdir(c.Path)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			pids, _ := c.Pids()
			return fmt.Errorf("rmdir %s: %w (pids left: %v)", c.Path, err, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
