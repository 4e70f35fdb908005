package loader

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// The test binary doubles as a server that runs inside a test cgroup: the
// cgroup of the process that creates a listening socket decides whether the
// program sees its connections.
func TestMain(m *testing.M) {
	if os.Getenv("IPNG_LOADER_HELPER") == "listen" {
		helperServer()
		return
	}
	os.Exit(m.Run())
}

// helperServer listens on loopback, prints its port and keeps every accepted
// connection open until its client closes it, until stdin closes.
func helperServer() {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Open until the client closes it.
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// testCgroup makes a unique child cgroup and removes it after the test,
// killing what is left in it.
func testCgroup(t *testing.T) string {
	t.Helper()
	mnt, err := Cgroup2Mount()
	if err != nil {
		testenv.Skip(t, err.Error())
	}
	return testenv.NewCgroup(t, mnt).Path
}

// startServer runs helperServer inside cgroup and returns its port.
func startServer(t *testing.T, cgroup string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "IPNG_LOADER_HELPER=listen")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := (&testenv.Cgroup{Path: cgroup}).Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	port, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		t.Fatalf("helper server: %q %v %v", line, err, perr)
	}
	return port
}

func pinDir(t *testing.T) string {
	dir := filepath.Join(DefaultBPFFS, fmt.Sprintf("ipng-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	t.Cleanup(func() { Detach(dir) })
	return dir
}

func dial(t *testing.T, port int) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// findStamp polls the cookie map for the connection whose client address is
// remote.
func findStamp(t *testing.T, m *Maps, remote netip.AddrPort) Stamp {
	t.Helper()
	var found Stamp
	testenv.Eventually(t, 10*time.Second, func() bool {
		stamps, err := m.LiveStamps()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stamps {
			if s.Remote == remote {
				found = s
				return true
			}
		}
		return false
	}, "a stamp for the connection from %s", remote)
	return found
}

func TestLoadAttachReuseDetach(t *testing.T) {
	testenv.RequireRoot(t)
	cgroup := testCgroup(t)
	dir := pinDir(t)
	cfg := Config{Cgroup: cgroup, PinDir: dir, KeepOnExit: true}

	p, err := Load(cfg, nil)
	if err != nil {
		t.Fatalf("Load: %+v", err)
	}
	if p.Reused() {
		t.Error("first Load reports reused pins")
	}
	for _, name := range []string{PinSk, PinByCookie, PinTupleStamps, PinCounters} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != PinMapMode {
			t.Errorf("pin %s has mode %v, want %v", name, st.Mode().Perm(), PinMapMode)
		}
	}

	port := startServer(t, cgroup)
	before := dial(t, port)
	beforeAddr := before.LocalAddr().(*net.TCPAddr).AddrPort()
	s := findStamp(t, p.Maps(), beforeAddr)
	lo, _ := net.InterfaceByName("lo")
	if s.Ifindex != uint32(lo.Index) || s.Local.Port() != uint16(port) || s.Source != SourceSKB {
		t.Errorf("stamp = %+v, want ifindex %d (lo), local port %d, source skb", s, lo.Index, port)
	}

	// A connection from outside the cgroup is not stamped.
	outside, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	oc := dial(t, outside.Addr().(*net.TCPAddr).Port)
	time.Sleep(50 * time.Millisecond)
	if stamps, _ := p.Maps().LiveStamps(); containsRemote(stamps, oc.LocalAddr().(*net.TCPAddr).AddrPort()) {
		t.Error("connection accepted outside the cgroup was stamped")
	}

	// Agent restart with keep_on_exit: pins stay, the program stays
	// attached, the next Load takes them over.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, PinLink)); err != nil {
		t.Fatalf("keep_on_exit: link pin gone: %v", err)
	}
	during := dial(t, port) // accepted while no agent runs
	p2, err := Load(cfg, nil)
	if err != nil {
		t.Fatalf("second Load: %+v", err)
	}
	if !p2.Reused() {
		t.Error("second Load did not reuse the pinned link")
	}
	findStamp(t, p2.Maps(), beforeAddr)
	findStamp(t, p2.Maps(), during.LocalAddr().(*net.TCPAddr).AddrPort())
	after := dial(t, port)
	findStamp(t, p2.Maps(), after.LocalAddr().(*net.TCPAddr).AddrPort())

	// Unprivileged readers get the same view through OpenPinned.
	ro, err := OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	findStamp(t, ro, after.LocalAddr().(*net.TCPAddr).AddrPort())
	counters, err := ro.ReadCounters()
	if err != nil {
		t.Fatal(err)
	}
	if counters["stamped"] < 3 {
		t.Errorf("counters = %v, want stamped >= 3", counters)
	}
	ro.Close()

	// Without keep_on_exit, Close detaches and removes the pins.
	p2.cfg.KeepOnExit = false
	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pin dir still exists after Close: %v", err)
	}
	if _, err := OpenPinned(dir); err == nil || !strings.Contains(err.Error(), "is `ipng-stats agent` running") {
		t.Errorf("OpenPinned after detach: %v", err)
	}
}

func containsRemote(stamps []Stamp, remote netip.AddrPort) bool {
	for _, s := range stamps {
		if s.Remote == remote {
			return true
		}
	}
	return false
}

func TestLoadMovesLinkToNewCgroup(t *testing.T) {
	testenv.RequireRoot(t)
	first, second := testCgroup(t), testCgroup(t)
	dir := pinDir(t)
	p, err := Load(Config{Cgroup: first, PinDir: dir, KeepOnExit: true}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	p.Close()
	p2, err := Load(Config{Cgroup: second, PinDir: dir}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p2.Close()
	if p2.Reused() {
		t.Error("link pinned for another cgroup was reused")
	}
	port := startServer(t, second)
	c := dial(t, port)
	findStamp(t, p2.Maps(), c.LocalAddr().(*net.TCPAddr).AddrPort())

	// The first cgroup is no longer covered.
	old := dial(t, startServer(t, first))
	time.Sleep(50 * time.Millisecond)
	if stamps, _ := p2.Maps().LiveStamps(); containsRemote(stamps, old.LocalAddr().(*net.TCPAddr).AddrPort()) {
		t.Error("a connection in the cgroup the link was moved away from was stamped")
	}
}

func TestLoadErrors(t *testing.T) {
	testenv.RequireRoot(t)
	dir := pinDir(t)
	if _, err := Load(Config{Cgroup: "/nonexistent-cgroup", PinDir: dir}, nil); err == nil || !strings.Contains(err.Error(), "/nonexistent-cgroup") {
		t.Errorf("missing cgroup: %v", err)
	}
	if _, err := Load(Config{Cgroup: "/tmp", PinDir: dir}, nil); err == nil || !strings.Contains(err.Error(), "not on a cgroup2 filesystem") {
		t.Errorf("non-cgroup2 dir: %v", err)
	}
	if _, err := Load(Config{PinDir: "/tmp/ipng-not-bpffs"}, nil); err == nil || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("pin dir outside bpffs: %v", err)
	}
}

// TestLoadReplacesIncompatiblePins: pinned maps made with another size (or
// by another version, with another layout) are replaced in place; the
// pinned link is kept, so the program is swapped without a gap, and maps
// that still fit keep what they hold.
func TestLoadReplacesIncompatiblePins(t *testing.T) {
	testenv.RequireRoot(t)
	dir := pinDir(t)
	cg := testCgroup(t)
	p, err := Load(Config{Cgroup: cg, PinDir: dir, KeepOnExit: true, Tuples: true, TupleMapEntries: 4096}, nil)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	port := startServer(t, cg)
	c := dial(t, port)
	findStamp(t, p.Maps(), c.LocalAddr().(*net.TCPAddr).AddrPort())
	p.Close()
	p2, err := Load(Config{Cgroup: cg, PinDir: dir, Tuples: true, TupleMapEntries: 8192}, nil)
	if err != nil {
		t.Fatalf("incompatible pins: %+v", err)
	}
	defer p2.Close()
	if !p2.ReplacedPins() || !p2.Reused() {
		t.Errorf("replaced %v, reused link %v; want both", p2.ReplacedPins(), p2.Reused())
	}
	if n := p2.Maps().TupleStamps.MaxEntries(); n != 8192 {
		t.Errorf("ring of 4-tuple stamps has %d entries, want 8192", n)
	}
	// The cookie map fitted: the connection accepted before is still there.
	findStamp(t, p2.Maps(), c.LocalAddr().(*net.TCPAddr).AddrPort())
}

func TestProbe(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testCgroup(t)
	got, err := Probe(Config{Cgroup: cg})
	if err != nil || got != cg {
		t.Fatalf("Probe = %q, %+v", got, err)
	}
}
