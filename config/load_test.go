package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadRefusesWhatIsNotAConfigFile: Load refuses directories, FIFOs,
// devices and files over MaxFileSize with a message naming the file and
// the reason, without blocking on a FIFO or reading /dev/zero forever.
func TestLoadRefusesWhatIsNotAConfigFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#\n", MaxFileSize/2+1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, fifo + " is a FIFO, not a regular file"},
		{"/dev/zero", "/dev/zero is a character device, not a regular file"},
		{dir, dir + " is a directory, not a regular file"},
		{big, big + " is 1048578 bytes, larger than the 1048576 bytes (1 MiB) a configuration file may have"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := Load(tc.path)
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Load(%s) = %v, want an error containing %q", tc.path, err, tc.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("Load(%s) still running after 30s", tc.path)
			}
		})
	}
}

// TestLoadAtTheBound: a file of exactly MaxFileSize bytes, and a symlink to
// a regular file, are read.
func TestLoadAtTheBound(t *testing.T) {
	dir := t.TempDir()
	body := "log:\n  level: debug\n"
	body += strings.Repeat("#", MaxFileSize-len(body)-1) + "\n"
	path := filepath.Join(dir, "at-bound.yml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yml")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, link} {
		c, err := Load(p)
		if err != nil {
			t.Fatalf("Load(%s) = %v", p, err)
		}
		if c.Log.Level != "debug" {
			t.Errorf("Load(%s): log.level = %q, want debug", p, c.Log.Level)
		}
	}
}
