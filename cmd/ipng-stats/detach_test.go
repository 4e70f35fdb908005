package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ipng/ipng-stats/loader"
)

// TestDetachSaysWhatItRemoved: detach on a directory that does not exist
// or holds no pins says that nothing was pinned (exit 0); with pins it
// names the ones it removed and leaves other files alone.
func TestDetachSaysWhatItRemoved(t *testing.T) {
	tmp := t.TempDir()
	missing := filepath.Join(tmp, "missing")
	empty := filepath.Join(tmp, "empty")
	pinned := filepath.Join(tmp, "pinned")
	for _, d := range []string{empty, pinned} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Detach removes pins by name; files stand in for them here.
	for _, name := range []string{loader.PinLink, loader.PinSk, "notes.txt"} {
		if err := os.WriteFile(filepath.Join(pinned, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ dir, want string }{
		{missing, "nothing pinned in " + missing + ": no such directory\n"},
		{empty, "nothing pinned in " + empty + "\n"},
		{pinned, "removed pins in " + pinned + ": " + loader.PinSk + ", " + loader.PinLink + "\n" +
			"left notes.txt in place: not pins of ipng-stats\n"},
	} {
		out, errOut, code := run(t, "detach", "--bpf.pin-dir", tc.dir)
		if code != 0 || out != tc.want {
			t.Errorf("detach %s: exit %d, output %q (stderr %q), want exit 0 and %q", tc.dir, code, out, errOut, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(pinned, loader.PinLink)); err == nil {
		t.Errorf("%s still pinned after detach", loader.PinLink)
	}
}
