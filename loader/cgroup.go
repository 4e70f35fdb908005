package loader

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Cgroup2Mount returns the mount point of the cgroup2 (unified) hierarchy,
// read from /proc/self/mountinfo: /sys/fs/cgroup on most current systems,
// /sys/fs/cgroup/unified on hybrid layouts.
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("finding cgroup2 mount: %w", err)
	}
	defer f.Close()
	return cgroup2MountFrom(f)
}

// cgroupMount is one cgroup2 mount of mountinfo: the directory of the
// hierarchy it shows (its mount root, "/" for the whole hierarchy) and where.
type cgroupMount struct{ root, point string }

// cgroup2Mounts parses mountinfo lines into the cgroup2 mounts, in order.
func cgroup2Mounts(r io.Reader) ([]cgroupMount, error) {
	var out []cgroupMount
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fstype, _, _ := strings.Cut(right, " ")
		fields := strings.Fields(left)
		if fstype != "cgroup2" || len(fields) < 5 {
			continue
		}
		out = append(out, cgroupMount{root: fields[3], point: unescapeMountPath(fields[4])})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// cgroup2MountFrom parses mountinfo lines: the first cgroup2 mount of the
// whole hierarchy (mount root "/") wins; a bind mount of a subtree (another
// tool's, e.g. a container runtime's) only when there is nothing else.
func cgroup2MountFrom(r io.Reader) (string, error) {
	mounts, err := cgroup2Mounts(r)
	if err != nil {
		return "", err
	}
	for _, m := range mounts {
		if m.root == "/" {
			return m.point, nil
		}
	}
	if len(mounts) > 0 {
		return mounts[0].point, nil
	}
	return "", errors.New("no cgroup2 filesystem is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup) or boot with systemd.unified_cgroup_hierarchy=1")
}

// unescapeMountPath undoes the octal escapes (\040 for space, ...) of mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, ok := octal(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal(s string) (byte, bool) {
	if len(s) != 3 {
		return 0, false
	}
	var v int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), v < 256
}

// ResolveCgroup turns the configured cgroup into an absolute directory of the
// cgroup2 hierarchy: "" is the root (every socket on the host), a relative
// path is taken below the cgroup2 mount, an absolute one is used as is when
// it is on a cgroup2 filesystem. An absolute directory that is not, such as
// a host's /sys/fs/cgroup mounted whole into a container, stands for the
// cgroup2 mount at or below it, found in /proc/self/mountinfo: the directory
// itself on a cgroup-v2 host, its unified/ on a hybrid-layout one. So a
// DaemonSet need not know which layout its nodes have.
func ResolveCgroup(configured string) (string, error) {
	path := configured
	if path == "" || !filepath.IsAbs(path) {
		mnt, err := Cgroup2Mount()
		if err != nil {
			return "", err
		}
		path = filepath.Join(mnt, configured)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", fmt.Errorf("cgroup %q: %w", path, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return path, nil
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("cgroup %q is not on a cgroup2 filesystem; finding one below it: %w", path, err)
	}
	defer f.Close()
	below, err := cgroup2MountBelow(f, path)
	if err != nil {
		return "", err
	}
	if err := unix.Statfs(below, &st); err != nil {
		return "", fmt.Errorf("cgroup %q: %w", below, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return "", fmt.Errorf("cgroup %q (the cgroup2 mount below %q) is not on a cgroup2 filesystem", below, path)
	}
	return below, nil
}

// cgroup2MountBelow is the shallowest cgroup2 mount point at or below dir in
// mountinfo lines (the first of equally deep ones).
func cgroup2MountBelow(r io.Reader, dir string) (string, error) {
	dir = filepath.Clean(dir)
	mounts, err := cgroup2Mounts(r)
	if err != nil {
		return "", err
	}
	var found []string
	best := ""
	for _, m := range mounts {
		mnt := m.point
		found = append(found, mnt)
		if mnt != dir && !strings.HasPrefix(mnt, dir+"/") && dir != "/" {
			continue
		}
		if best == "" || strings.Count(mnt, "/") < strings.Count(best, "/") {
			best = mnt
		}
	}
	if best != "" {
		return best, nil
	}
	if len(found) == 0 {
		return "", fmt.Errorf("cgroup %q is not on a cgroup2 filesystem and no cgroup2 filesystem is mounted (sock_ops attaches to cgroup v2 only)", dir)
	}
	return "", fmt.Errorf("cgroup %q is not on a cgroup2 filesystem and has no cgroup2 mount below it (sock_ops attaches to cgroup v2 only; cgroup2 is mounted at %s)", dir, strings.Join(found, ", "))
}

// cgroupID is the id the kernel reports for a cgroup2 directory: its inode.
func cgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// ProcessCgroup is the cgroup2 directory of the calling process, from the
// "0::" line of /proc/self/cgroup.
func ProcessCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			mnt, err := Cgroup2Mount()
			if err != nil {
				return "", err
			}
			return filepath.Join(mnt, rest), nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}
