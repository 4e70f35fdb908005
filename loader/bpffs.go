package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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

// ensurePinDir makes sure dir is a directory on a bpf filesystem, mounting
// one at /sys/fs/bpf when dir lives below it and it is not mounted yet.
func ensurePinDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("pin directory %q is not absolute", dir)
	}
	parent := existingParent(dir)
	ok, err := isBPFFS(parent)
	if err != nil {
		return fmt.Errorf("pin directory %q: %w", dir, err)
	}
	if !ok {
		rel, err := filepath.Rel(DefaultBPFFS, dir)
		if err != nil || rel == ".." || filepath.IsAbs(rel) || len(rel) >= 2 && rel[:2] == ".." {
			return fmt.Errorf("pin directory %q is not on a bpf filesystem: mount one (mount -t bpf bpf DIR) or use a directory below %s", dir, DefaultBPFFS)
		}
		if err := os.MkdirAll(DefaultBPFFS, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", DefaultBPFFS, err)
		}
		if err := unix.Mount("bpf", DefaultBPFFS, "bpf", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mounting bpf filesystem at %s: %w (needs CAP_SYS_ADMIN; or mount it beforehand: mount -t bpf bpf %s)", DefaultBPFFS, err, DefaultBPFFS)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating pin directory: %w", err)
	}
	// Readers (`ipng-stats conns`, servers embedding the library) need to
	// traverse the directory without privileges.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("pin directory: %w", err)
	}
	return nil
}

// existingParent returns dir or its nearest existing ancestor.
func existingParent(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil || !errors.Is(err, os.ErrNotExist) {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			return dir
		}
		dir = up
	}
}
