package loader

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultCgroup2 is where a cgroup2 hierarchy is mounted in a private mount
// namespace that shows none.
const DefaultCgroup2 = "/sys/fs/cgroup"

// PrivateMountNamespace reports whether the process runs in a mount
// namespace other than its parent's or PID 1's: under `ip netns exec`
// (which remounts /sys for the network namespace: no cgroup2, no bpffs
// below it) or `unshare -m`. It returns the root directory, under /proc, of
// a process in the other namespace, through which the host's bpffs is
// reached (its /proc/PID directory). A namespace it cannot read (another PID namespace, a PID 1 that
// is not dumpable) is not compared.
func PrivateMountNamespace() (other string, private bool) {
	var self unix.Stat_t
	if unix.Stat("/proc/self/ns/mnt", &self) != nil {
		return "", false
	}
	for _, pid := range []int{1, os.Getppid()} {
		var st unix.Stat_t
		if pid <= 0 || unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &st) != nil {
			continue
		}
		if st.Ino != self.Ino || st.Dev != self.Dev {
			return fmt.Sprintf("/proc/%d", pid), true
		}
	}
	return "", false
}

// wholeCgroup2Visible reports whether a cgroup2 mount of the whole
// hierarchy (mount root "/") is visible; a bind mount of a subtree (mount
// root "/some/group") is not the hierarchy the agent attaches to.
func wholeCgroup2Visible() (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		left, right, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(left)
		if ok && strings.HasPrefix(right, "cgroup2 ") && len(fields) >= 5 && fields[3] == "/" {
			return true, nil
		}
	}
	return false, sc.Err()
}

// privateMounts makes the host's cgroup2 hierarchy and bpffs visible when
// the agent runs in a private mount namespace that shows neither (`ip netns
// exec`): it mounts a cgroup2 view at /sys/fs/cgroup (the same hierarchy,
// seen from the agent's cgroup namespace) and, when the pin directory is
// below /sys/fs/bpf, mounts a copy of the host's bpffs mount there (cloneMount).
// A fresh bpffs would be private: its pins invisible to the host (`conns`,
// nginx on the host, the next agent) and gone when the agent exits. When
// the host has no bpffs either, it fails naming the cause and the fix. The
// mounts are the namespace's own: they vanish with it. Outside a private
// mount namespace it does nothing (ensurePinDir mounts a missing bpffs
// there, where it is the host's).
func privateMounts(cfg Config, log *slog.Logger) error {
	other, private := PrivateMountNamespace()
	if !private {
		return nil
	}
	const cause = "the agent runs in a private mount namespace (ip netns exec, unshare -m, or a container with its own /sys)"
	if cfg.Cgroup == "" || !strings.HasPrefix(cfg.Cgroup, "/") {
		ok, err := wholeCgroup2Visible()
		if err != nil {
			return fmt.Errorf("finding cgroup2 mount: %w", err)
		}
		var st unix.Statfs_t
		if !ok && (unix.Statfs(DefaultCgroup2, &st) != nil || st.Type != unix.SYSFS_MAGIC) {
			return fmt.Errorf("%s that shows no cgroup2 hierarchy, and %s is not an empty sysfs directory to mount one on: "+
				"mount one (mount -t cgroup2 none DIR) or run the agent in the host's mount namespace (e.g. nsenter --net=/run/netns/NAME instead of ip netns exec)", cause, DefaultCgroup2)
		}
		if !ok {
			if err := unix.Mount("none", DefaultCgroup2, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return fmt.Errorf("%s that shows no cgroup2 hierarchy, and mounting one at %s failed: %w "+
					"(run the agent in the host's mount namespace, e.g. nsenter --net=/run/netns/NAME instead of ip netns exec)", cause, DefaultCgroup2, err)
			}
			log.Info("mounted a cgroup2 view: "+cause+" that showed none", "at", DefaultCgroup2)
		}
	}
	if !Below(cfg.PinDir, DefaultBPFFS) {
		return nil
	}
	if ok, _ := isBPFFS(DefaultBPFFS); ok {
		return nil
	}
	host := other + "/root" + DefaultBPFFS
	if ok, _ := isBPFFS(host); !ok {
		return fmt.Errorf("%s with no bpf filesystem at %s, and the host has none there either: a bpffs mounted here would be private "+
			"(its pins invisible to the host and lost when the agent exits); mount one on the host first (mount -t bpf bpf %s), "+
			"or run the agent in the host's mount namespace (e.g. nsenter --net=/run/netns/NAME instead of ip netns exec), where it mounts one itself",
			cause, DefaultBPFFS, DefaultBPFFS)
	}
	if err := cloneMount(other+"/ns/mnt", DefaultBPFFS); err != nil {
		return fmt.Errorf("%s with no bpf filesystem at %s, and mounting the host's from %s failed: %w "+
			"(run the agent in the host's mount namespace, e.g. nsenter --net=/run/netns/NAME instead of ip netns exec)", cause, DefaultBPFFS, host, err)
	}
	log.Info("mounted the host's bpf filesystem: "+cause+" that showed none", "at", DefaultBPFFS, "from", other+"/ns/mnt")
	return nil
}

// cloneMount mounts at path, in the caller's mount namespace, a copy of the
// mount at the same path in the mount namespace nsPath. A bind mount
// (mount(2), or open_tree(2) from here) refuses a source in another mount
// namespace, so the copy is made inside it: on a thread of its own that
// leaves the process's shared filesystem state (unshare CLONE_FS, needed
// for setns CLONE_NEWNS), enters nsPath and clones the mount with
// open_tree(OPEN_TREE_CLONE); that thread is then thrown away (its
// goroutine exits locked), and the detached copy is attached here with
// move_mount(2). Needs Linux 5.2 and CAP_SYS_ADMIN.
func cloneMount(nsPath, path string) error {
	fd, err := inMountNS(nsPath, func() (int, error) {
		fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			err = fmt.Errorf("open_tree %s: %w", path, err)
		}
		return fd, err
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, path, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", path, err)
	}
	return nil
}

// inMountNS runs f on a thread of its own inside the mount namespace
// nsPath and returns what f returned. The thread goes back to the
// process's mount namespace before it is thrown away: when the goroutine
// ran on the main thread, which Go never ends (it parks it), that thread
// would otherwise stay in nsPath, and /proc/self (the main thread's view)
// would show nsPath's mounts to the whole process: the agent then looked
// its cgroup up in the host's mount table (TestInMountNSLeavesNoThreadBehind).
func inMountNS(nsPath string, f func() (int, error)) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is thrown away with the goroutine
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			ch <- result{-1, fmt.Errorf("unshare CLONE_FS: %w", err)}
			return
		}
		home, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, err}
			return
		}
		defer unix.Close(home)
		ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, err}
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNS); err != nil {
			ch <- result{-1, fmt.Errorf("entering %s: %w", nsPath, err)}
			return
		}
		fd, err := f()
		if berr := unix.Setns(home, unix.CLONE_NEWNS); berr != nil && err == nil {
			unix.Close(fd)
			fd, err = -1, fmt.Errorf("leaving %s: %w", nsPath, berr)
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}
