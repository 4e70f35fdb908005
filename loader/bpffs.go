package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where a bpf filesystem is mounted when the pin directory is
// below it and nothing is mounted there yet.
const DefaultBPFFS = "/sys/fs/bpf"

func isBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}

// ensurePinDir makes sure dir, with its symlinks resolved, is a directory
// on a bpf filesystem, mounting one at /sys/fs/bpf when dir resolves below
// it and nothing is mounted there yet. An existing directory (or symlink to
// one) that is not on bpffs is an error naming where it resolves to and
// what it is on; nothing is mounted over it.
func ensurePinDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("pin directory %q is not absolute", dir)
	}
	resolved, existing, err := ResolvePath(dir)
	if err != nil {
		return fmt.Errorf("pin directory %q: %w", dir, err)
	}
	shown := dir
	if resolved != dir {
		shown = fmt.Sprintf("%s (resolves to %s)", dir, resolved)
	}
	if fi, err := os.Stat(resolved); err == nil && !fi.IsDir() {
		return fmt.Errorf("pin directory %s is not a directory", shown)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(existing, &st); err != nil {
		return fmt.Errorf("pin directory %s: %w", shown, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		onBPFFS, _ := isBPFFS(DefaultBPFFS)
		if !Below(resolved, DefaultBPFFS) || onBPFFS {
			return fmt.Errorf("pin directory %s is not on a bpf filesystem (%s is on %s): mount one (mount -t bpf bpf DIR) or use a directory below %s",
				shown, existing, FSName(int64(st.Type)), DefaultBPFFS)
		}
		if err := os.MkdirAll(DefaultBPFFS, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", DefaultBPFFS, err)
		}
		if err := unix.Mount("bpf", DefaultBPFFS, "bpf", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mounting bpf filesystem at %s: %w (needs CAP_SYS_ADMIN; or mount it beforehand: mount -t bpf bpf %s)", DefaultBPFFS, err, DefaultBPFFS)
		}
	}
	if err := os.MkdirAll(resolved, PinDirMode); err != nil {
		return fmt.Errorf("creating pin directory: %w", err)
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return fmt.Errorf("pin directory: %w", err)
	}
	// Readers (`ipng-stats conns`, servers embedding the library) traverse
	// the directory as root or as a member of its group; a set-group-ID
	// bit (chmod g+s, an operator's choice of that group) is kept, so that
	// pins made in it take the directory's group.
	if err := os.Chmod(resolved, PinDirMode|fi.Mode()&os.ModeSetgid); err != nil {
		return fmt.Errorf("pin directory: %w", err)
	}
	return nil
}

// The modes of the pin directory and its pins (docs/reliability.md, "Pin
// and spool file modes"). Owner and group are the agent's (its user and
// group, or the directory's group when it is set-group-ID): the agent
// reads and writes them; root and the members of the group read the maps
// (`ipng-stats conns`); nobody else can open anything. The link pin, which
// lets its holder detach the program, is the owner's only.
const (
	PinDirMode  os.FileMode = 0o750
	PinMapMode  os.FileMode = 0o640
	PinLinkMode os.FileMode = 0o600
)

// ResolvePath resolves the symlinks of the longest existing prefix of an
// absolute path and appends the rest. It returns the result and that
// existing prefix (resolved).
func ResolvePath(p string) (resolved, existing string, err error) {
	existing = filepath.Clean(p)
	var rest []string
	for {
		r, err := filepath.EvalSymlinks(existing)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), r, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", "", err
		}
		up := filepath.Dir(existing)
		if up == existing {
			return "", "", err
		}
		rest = append([]string{filepath.Base(existing)}, rest...)
		existing = up
	}
}

// Below reports whether p is dir or inside it (both clean and absolute).
func Below(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// FSName names common filesystem types (statfs f_type) for messages.
func FSName(magic int64) string {
	names := map[int64]string{
		unix.TMPFS_MAGIC: "tmpfs", unix.EXT4_SUPER_MAGIC: "ext4", unix.XFS_SUPER_MAGIC: "xfs",
		unix.BTRFS_SUPER_MAGIC: "btrfs", unix.OVERLAYFS_SUPER_MAGIC: "overlayfs", unix.SYSFS_MAGIC: "sysfs",
		unix.PROC_SUPER_MAGIC: "proc", unix.CGROUP2_SUPER_MAGIC: "cgroup2", unix.BPF_FS_MAGIC: "bpffs",
	}
	if n, ok := names[magic]; ok {
		return n
	}
	return fmt.Sprintf("a filesystem of type %#x", magic)
}
