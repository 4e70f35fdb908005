package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/loader"
)

// checkPinDir checks that bpf.pin_dir, with symlinks resolved, is on a bpf
// filesystem (or below /sys/fs/bpf with nothing mounted there yet, which
// the agent mounts). The agent cannot pin anywhere else: in mode auto it
// would run on without BPF, so check fails in modes auto and bpf alike.
// It needs no privilege (statfs).
func checkPinDir(w io.Writer, cfg *config.Config) (ok bool) {
	mode, _ := attribution.ParseMode(cfg.Attribution.Mode) // validated by config
	if mode == attribution.ModeFallback {
		return true
	}
	dir := cfg.BPF.PinDir
	resolved, existing, err := resolvePath(dir)
	if err != nil {
		fmt.Fprintf(w, "FAIL  bpf pin_dir %s: %v\n", dir, err)
		return false
	}
	shown := dir
	if resolved != dir {
		shown = fmt.Sprintf("%s (resolves to %s)", dir, resolved)
	}
	if fi, err := os.Stat(resolved); err == nil && !fi.IsDir() {
		fmt.Fprintf(w, "FAIL  bpf pin_dir %s: not a directory\n", shown)
		return false
	}
	magic, err := fsMagic(existing)
	if err != nil {
		fmt.Fprintf(w, "FAIL  bpf pin_dir %s: %v\n", shown, err)
		return false
	}
	if magic == unix.BPF_FS_MAGIC {
		fmt.Fprintf(w, "ok    bpf pin_dir %s: on a bpf filesystem\n", shown)
		return true
	}
	if below(resolved, loader.DefaultBPFFS) {
		if m, err := fsMagic(loader.DefaultBPFFS); err != nil || m != unix.BPF_FS_MAGIC {
			fmt.Fprintf(w, "ok    bpf pin_dir %s: no bpf filesystem at %s yet; the agent mounts one there (needs CAP_SYS_ADMIN)\n", shown, loader.DefaultBPFFS)
			return true
		}
	}
	fmt.Fprintf(w, "FAIL  bpf pin_dir %s: %s is on %s, not a bpf filesystem; the agent cannot pin there "+
		"(use a directory below %s, or mount one: mount -t bpf bpf DIR)\n", shown, existing, fsName(magic), loader.DefaultBPFFS)
	return false
}

// resolvePath resolves the symlinks of the longest existing prefix of an
// absolute path and appends the rest. It returns the result and that
// existing prefix (resolved).
func resolvePath(p string) (resolved, existing string, err error) {
	existing = filepath.Clean(p)
	var rest []string
	for {
		r, err := filepath.EvalSymlinks(existing)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), r, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
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

func fsMagic(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Type), nil
}

// fsName names common filesystem types for the message.
func fsName(magic int64) string {
	names := map[int64]string{
		unix.TMPFS_MAGIC: "tmpfs", unix.EXT4_SUPER_MAGIC: "ext4", unix.XFS_SUPER_MAGIC: "xfs",
		unix.BTRFS_SUPER_MAGIC: "btrfs", unix.OVERLAYFS_SUPER_MAGIC: "overlayfs", unix.SYSFS_MAGIC: "sysfs",
		unix.PROC_SUPER_MAGIC: "proc", unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	}
	if n, ok := names[magic]; ok {
		return n
	}
	return fmt.Sprintf("a filesystem of type %#x", magic)
}

// below reports whether path is dir or inside it (both clean and absolute).
func below(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}
