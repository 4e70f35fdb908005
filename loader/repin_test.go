package loader

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestEnsurePinDirResolvesSymlinks: a pin directory that is a symlink is
// judged by where it leads: to a directory on bpffs it is used, to one
// elsewhere it is refused with both paths named, and nothing is mounted
// over /sys/fs/bpf.
func TestEnsurePinDirResolvesSymlinks(t *testing.T) {
	testenv.RequireRoot(t)
	if ok, _ := isBPFFS(DefaultBPFFS); !ok {
		testenv.Skip(t, "no bpf filesystem at "+DefaultBPFFS)
	}
	mounts := func() int {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), " "+DefaultBPFFS+" ")
	}
	before := mounts()

	away := t.TempDir() // not bpffs
	link := pinDir(t)
	if err := os.Symlink(away, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	err := ensurePinDir(link)
	if err == nil || !strings.Contains(err.Error(), "resolves to "+away) || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("symlink to %s: %v", away, err)
	}
	if err := ensurePinDir(filepath.Join(link, "sub")); err == nil {
		t.Error("a directory below a symlink that leaves bpffs was accepted")
	}
	if n := mounts(); n != before {
		t.Errorf("%d bpf mounts at %s, %d before", n, DefaultBPFFS, before)
	}

	target := pinDir(t)
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	link2 := pinDir(t)
	if err := os.Symlink(target, link2); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link2) })
	if err := ensurePinDir(link2); err != nil {
		t.Errorf("symlink to a directory on bpffs: %v", err)
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != PinDirMode {
		t.Errorf("target after ensurePinDir: %v %v, want mode %v", fi.Mode(), err, PinDirMode)
	}
}

// TestEnsurePinDirKeepsSetgid: a pin directory an operator gave a group
// (chgrp, chmod g+s) is narrowed to PinDirMode with the set-group-ID bit
// and the group kept, so pins made in it take that group.
func TestEnsurePinDirKeepsSetgid(t *testing.T) {
	testenv.RequireRoot(t)
	if ok, _ := isBPFFS(DefaultBPFFS); !ok {
		testenv.Skip(t, "no bpf filesystem at "+DefaultBPFFS)
	}
	dir := pinDir(t)
	const gid = 65534
	if err := os.Mkdir(dir, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o775|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	if err := ensurePinDir(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode()&^os.ModeDir, PinDirMode|os.ModeSetgid; got != want || fi.Sys().(*syscall.Stat_t).Gid != gid {
		t.Errorf("after ensurePinDir: mode %v group %d, want %v group %d", got, fi.Sys().(*syscall.Stat_t).Gid, want, gid)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := filepath.Join(dir, PinCounters)
	if err := m.Pin(p); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Sys().(*syscall.Stat_t).Gid != gid {
		t.Errorf("a pin made in the set-group-ID directory: %v %v, want group %d", fi, err, gid)
	}
}

// TestRepin: the pin directory removed under a loaded program is re-created
// with every pin, and the re-pinned objects are the program's (a reader
// sees the stamps made before the removal and after it).
func TestRepin(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testCgroup(t)
	dir := pinDir(t)
	p, err := Load(Config{Cgroup: cg, PinDir: dir, Tuples: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	port := startServer(t, cg)
	before := dial(t, port)
	findStamp(t, p.Maps(), before.LocalAddr().(*net.TCPAddr).AddrPort())

	if names, err := p.Repin(); err != nil || names != nil {
		t.Fatalf("Repin with every pin in place: %v %v", names, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	names, err := p.Repin()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{PinLink}, mapPins...)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("re-pinned %v, want %v", names, want)
	}
	after := dial(t, port)
	m, err := OpenPinned(dir)
	if err != nil {
		t.Fatalf("opening the re-pinned maps: %v", err)
	}
	defer m.Close()
	findStamp(t, m, before.LocalAddr().(*net.TCPAddr).AddrPort())
	findStamp(t, m, after.LocalAddr().(*net.TCPAddr).AddrPort())
	for _, n := range want {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		wantMode := PinMapMode
		if n == PinLink {
			wantMode = PinLinkMode
		}
		if fi.Mode().Perm() != wantMode {
			t.Errorf("%s: mode %v, want %v", n, fi.Mode().Perm(), wantMode)
		}
	}
	// A second removal of a single pin is repaired too.
	os.Remove(filepath.Join(dir, PinConns))
	if names, err := p.Repin(); err != nil || !slices.Equal(names, []string{PinConns}) {
		t.Errorf("one pin removed: re-pinned %v %v", names, err)
	}
	// Where the directory cannot be made again, Repin says why.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), dir); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if _, err := p.Repin(); err == nil || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("pin directory replaced by a symlink to another filesystem: %v", err)
	}
}

// TestWatchPinsWakesOnRemoval: WatchPins restores removed pins as soon as
// they are removed (inotify), not at its next periodic check, which this
// test puts an hour away: the directory removed, then a single pin.
func TestWatchPinsWakesOnRemoval(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testCgroup(t)
	dir := pinDir(t)
	var log testenv.SyncBuffer
	p, err := Load(Config{Cgroup: cg, PinDir: dir, Tuples: true}, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.WatchPins(ctx, time.Hour) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchPins: %v", err)
		}
	}()
	exists := func(name string) bool {
		_, err := os.Lstat(filepath.Join(dir, name))
		return err == nil
	}
	// Removed before or after WatchPins set its watch: its first check or
	// the watch restores the directory. The watcher may pin again while
	// the removal runs, which then finds the directory not empty.
	os.RemoveAll(dir)
	all := func() bool {
		for name := range p.pinned() {
			if !exists(name) {
				return false
			}
		}
		return true
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return p.Repins() >= 1 && all() },
		"the removed pin directory pinned again")
	// Now only the watch can wake it, in the directory WatchPins made.
	for i := range 2 {
		n := p.Repins()
		if err := os.Remove(filepath.Join(dir, PinConns)); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 20*time.Second, func() bool { return p.Repins() > n && exists(PinConns) },
			"the removed %s pinned again (%d)", PinConns, i+1)
	}
	if strings.Contains(log.String(), "cannot watch") {
		t.Errorf("the pin directory was not watched:\n%s", log.String())
	}
}

// TestWatchPinsSurvivesRemovalsWhileRepinning removes the pin directory
// again and again while WatchPins re-pins into it: a re-pin that loses
// what it just pinned (ENOENT on the pin or its chmod) must pin again,
// not stop the agent, and the pins must all be back at the end.
func TestWatchPinsSurvivesRemovalsWhileRepinning(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testCgroup(t)
	dir := pinDir(t)
	p, err := Load(Config{Cgroup: cg, PinDir: dir, Tuples: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.WatchPins(ctx, time.Hour) }()
	for i := range 300 {
		os.RemoveAll(dir)
		select {
		case err := <-done:
			t.Fatalf("WatchPins stopped after %d removals: %v", i+1, err)
		default:
		}
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("WatchPins stopped after the removals: %v", err)
		default:
		}
		for name := range p.pinned() {
			if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
				return false
			}
		}
		return true
	}, "every pin back after the removals")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchPins: %v", err)
	}
}
