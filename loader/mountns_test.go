package loader

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
)

func mntNS(t *testing.T, path string) string {
	t.Helper()
	l, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestInMountNSLeavesNoThreadBehind: after running something in another
// mount namespace, every thread of the process, the main thread that
// /proc/self shows included, is back in the process's own. With one P the
// helper's goroutine runs on the main thread (the test's goroutine waits on
// it there), which Go never ends: left in the other namespace, it made
// /proc/self/mountinfo show that namespace's mounts to the whole agent.
func TestInMountNSLeavesNoThreadBehind(t *testing.T) {
	testenv.RequireRoot(t)
	other := exec.Command("unshare", "-m", "sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	otherNS := "/proc/" + strconv.Itoa(other.Process.Pid) + "/ns/mnt"
	home := mntNS(t, "/proc/thread-self/ns/mnt")
	testenv.Eventually(t, 10*time.Second, func() bool { l, err := os.Readlink(otherNS); return err == nil && l != home }, "unshare -m to make its namespace")

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for i := range 20 {
		seen := ""
		fd, err := inMountNS(otherNS, func() (int, error) {
			seen = mntNS(t, "/proc/thread-self/ns/mnt")
			return unix.Open("/", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		})
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		if seen == home {
			t.Fatalf("run %d: f ran in the process's namespace %s, not in %s", i, seen, otherNS)
		}
		for _, p := range []string{"/proc/self/ns/mnt", "/proc/thread-self/ns/mnt"} {
			if got := mntNS(t, p); got != home {
				t.Fatalf("run %d: %s is %s after inMountNS, want the process's %s", i, p, got, home)
			}
		}
	}
}
