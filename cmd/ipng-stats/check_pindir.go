package main

import (
	"fmt"
	"io"
	"os"

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
	resolved, existing, err := loader.ResolvePath(dir)
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
	if loader.Below(resolved, loader.DefaultBPFFS) {
		if m, err := fsMagic(loader.DefaultBPFFS); err != nil || m != unix.BPF_FS_MAGIC {
			fmt.Fprintf(w, "ok    bpf pin_dir %s: no bpf filesystem at %s yet; the agent mounts one there (needs CAP_SYS_ADMIN)\n", shown, loader.DefaultBPFFS)
			return true
		}
	}
	fmt.Fprintf(w, "FAIL  bpf pin_dir %s: %s is on %s, not a bpf filesystem; the agent cannot pin there "+
		"(use a directory below %s, or mount one: mount -t bpf bpf DIR)\n", shown, existing, loader.FSName(magic), loader.DefaultBPFFS)
	return false
}

func fsMagic(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return int64(st.Type), nil
}
