package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckPinDir: check fails (exit 2) for a pin directory that is not on
// a bpf filesystem, following symlinks, and passes for one that is, even
// when reached through a symlink. A path with ".." is a config error.
func TestCheckPinDir(t *testing.T) {
	tmp := t.TempDir()
	onBPFFS := filepath.Join(tmp, "bpffs")
	if err := os.Symlink("/sys/fs/bpf", onBPFFS); err != nil {
		t.Fatal(err)
	}
	toTmp := filepath.Join(tmp, "elsewhere")
	if err := os.Symlink(tmp, toTmp); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		code      int
		want      string
	}{
		{"not bpffs", filepath.Join(tmp, "pins"), checkFailed,
			"FAIL  bpf pin_dir " + filepath.Join(tmp, "pins") + ": " + tmp + " is on "},
		{"symlink to not bpffs", filepath.Join(toTmp, "pins"), checkFailed,
			"FAIL  bpf pin_dir " + filepath.Join(toTmp, "pins") + " (resolves to " + filepath.Join(tmp, "pins") + "): "},
		{"symlink to bpffs", filepath.Join(onBPFFS, "ipngt-check"), checkOK,
			// "on a bpf filesystem", or "the agent mounts one there" on a
			// host where nothing has mounted bpffs yet.
			"ok    bpf pin_dir " + filepath.Join(onBPFFS, "ipngt-check") + " (resolves to /sys/fs/bpf/ipngt-check): "},
		{"dot dot", "/sys/fs/bpf/../../../etc", checkBadConfig,
			`bpf.pin_dir: must not contain "..": "/sys/fs/bpf/../../../etc" is "/etc"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// web.listen-address :0 so that a running agent's :9113 does
			// not matter; the listener check is not what is tested here.
			out, _, code := run(t, "check", "--attribution.mode", "auto", "--web.listen-address", "127.0.0.1:0", "--bpf.pin-dir", tc.dir)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d and %q in:\n%s", code, tc.code, tc.want, out)
			}
			if tc.code == checkFailed && (!strings.Contains(out, "not a bpf filesystem; the agent cannot pin there") ||
				strings.Contains(out, "BPF socket stamps")) {
				t.Errorf("no reason, or attribution still reported as working, in:\n%s", out)
			}
		})
	}
	// In mode fallback nothing is pinned: the directory does not matter.
	out, _, code := run(t, "check", "--attribution.mode", "fallback", "--web.listen-address", "127.0.0.1:0", "--bpf.pin-dir", filepath.Join(tmp, "pins"))
	if code != checkOK || strings.Contains(out, "pin_dir") {
		t.Errorf("mode fallback: exit %d:\n%s", code, out)
	}
}
