package nginxlog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spoolDir is a directory on tmpfs (the production case) if /dev/shm is
// one, else a temporary directory.
func spoolDir(t *testing.T) string {
	t.Helper()
	if onTmpfs("/dev/shm") {
		d, err := os.MkdirTemp("/dev/shm", "nginxlog-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

type collected struct {
	lines []string
	long  int
}

func newTestSpool(path string, c *collected) *spool {
	return newSpool(path, 300, func(b []byte) { c.lines = append(c.lines, string(b)) }, func() { c.long++ })
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func pollAll(t *testing.T, s *spool) {
	t.Helper()
	for range 100 {
		n, err := s.poll()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
	t.Fatal("spool never caught up")
}

func nums(from, to int) (string, []string) {
	var b strings.Builder
	var want []string
	for i := from; i < to; i++ {
		l := fmt.Sprintf("line-%06d", i)
		want = append(want, l)
		b.WriteString(l + "\n")
	}
	return b.String(), want
}

func TestSpoolLines(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []string
		long   int
	}{
		{"whole lines", []string{"a\nb\n", "c\n"}, []string{"a", "b", "c"}, 0},
		{"partial line completed later", []string{"a\nb", "b\nc", "c\n"}, []string{"a", "bb", "cc"}, 0},
		{"no newline yet", []string{"abc"}, nil, 0},
		{"empty lines skipped", []string{"\n\na\n\n"}, []string{"a"}, 0},
		{"too long line", []string{"a\n" + strings.Repeat("x", 301) + "\nb\n"}, []string{"a", "b"}, 1},
		{"too long across reads", []string{"a\n" + strings.Repeat("x", 400), strings.Repeat("y", 400), "z\nb\n"}, []string{"a", "b"}, 1},
		{"longest allowed", []string{strings.Repeat("x", 300) + "\n"}, []string{strings.Repeat("x", 300)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(spoolDir(t), "access.log")
			var c collected
			s := newTestSpool(path, &c)
			defer s.close()
			pollAll(t, s) // no file yet
			for _, ch := range tt.chunks {
				appendFile(t, path, ch)
				pollAll(t, s)
			}
			if !slices.Equal(c.lines, tt.want) || c.long != tt.long {
				t.Errorf("got %q (%d too long), want %q (%d)", c.lines, c.long, tt.want, tt.long)
			}
		})
	}
}

func blocks(t *testing.T, path string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestSpoolFreesAndResumes: consumed bytes are released, and a new reader
// (agent restart) starts exactly after the last line the previous one read.
func TestSpoolFreesAndResumes(t *testing.T) {
	path := filepath.Join(spoolDir(t), "access.log")
	var c collected
	s := newTestSpool(path, &c)
	data, want := nums(0, 200000) // 2.4 MB
	appendFile(t, path, data)
	pollAll(t, s)
	s.close()
	if !slices.Equal(c.lines, want) {
		t.Fatalf("got %d lines, want %d", len(c.lines), len(want))
	}
	if b := blocks(t, path); b > 8192 {
		t.Errorf("%d bytes still allocated after consuming everything", b)
	}
	more, want2 := nums(200000, 200010)
	appendFile(t, path, "line-partial")
	c = collected{}
	s = newTestSpool(path, &c)
	pollAll(t, s)
	appendFile(t, path, "-done\n"+more)
	pollAll(t, s)
	s.close()
	want2 = append([]string{"line-partial-done"}, want2...)
	if !slices.Equal(c.lines, want2) {
		t.Errorf("after restart got %q, want %q", c.lines, want2)
	}
}

// TestSpoolRotation: rename + new file (logrotate "create"), lines still
// written to the old file before nginx reopens, then to the new one.
func TestSpoolRotation(t *testing.T) {
	dir := spoolDir(t)
	path := filepath.Join(dir, "access.log")
	var c collected
	s := newTestSpool(path, &c)
	defer s.close()
	appendFile(t, path, "a\n")
	pollAll(t, s)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "c\n")      // new file created
	appendFile(t, path+".1", "b\n") // nginx still writes the old one
	pollAll(t, s)
	appendFile(t, path+".1", "b2\n")
	appendFile(t, path, "d\n")
	pollAll(t, s)
	slices.Sort(c.lines)
	if want := []string{"a", "b", "b2", "c", "d"}; !slices.Equal(c.lines, want) {
		t.Errorf("got %q, want %q", c.lines, want)
	}
	// The old file is closed once idle.
	s.now = func() time.Time { return time.Now().Add(drainIdle + time.Second) }
	pollAll(t, s)
	if s.old != nil || s.reopens != 1 {
		t.Errorf("old file still open (%v) or reopens %d", s.old != nil, s.reopens)
	}
}

func TestSpoolTruncation(t *testing.T) {
	path := filepath.Join(spoolDir(t), "access.log")
	var c collected
	s := newTestSpool(path, &c)
	defer s.close()
	appendFile(t, path, "aaaa\nbbbb\n")
	pollAll(t, s)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "c\n")
	pollAll(t, s)
	if want := []string{"aaaa", "bbbb", "c"}; !slices.Equal(c.lines, want) || s.truncs != 1 {
		t.Errorf("got %q (truncs %d), want %q", c.lines, s.truncs, want)
	}
}

// TestSpoolResumesAfterKill: every read frees exactly what it handled, so a
// reader that dies without closing (SIGKILL) leaves a spool its successor
// resumes exactly after the last line handled, partial pages included.
// Before, a read freed only whole pages (and the rest every 1 MiB or at
// the next idle poll): the successor read the lines of the last partial
// page again.
func TestSpoolResumesAfterKill(t *testing.T) {
	path := filepath.Join(spoolDir(t), "access.log")
	var c collected
	s := newTestSpool(path, &c)
	data, want := nums(0, 1000) // 12 000 bytes: ends in a partial page
	appendFile(t, path, data+"line-partial")
	if _, err := s.poll(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.lines, want) {
		t.Fatalf("got %d lines, want %d", len(c.lines), len(want))
	}
	// Killed here: no close, no maintenance.
	more, want2 := nums(1000, 1010)
	appendFile(t, path, "-done\n"+more)
	var c2 collected
	s2 := newTestSpool(path, &c2)
	pollAll(t, s2)
	s2.close()
	s.cur.f.Close()
	want2 = append([]string{"line-partial-done"}, want2...)
	if !slices.Equal(c2.lines, want2) {
		t.Errorf("the successor read %d lines (%.3q...), want %q", len(c2.lines), c2.lines, want2)
	}
}
