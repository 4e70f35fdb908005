package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	cmdTimeout  = 10 * time.Second // bound for every ip/nsenter call
	listenRetry = 3 * time.Second  // see NS.ListenWith
)

// RequireNetns skips the test unless it can create network namespaces
// (root, ip and nsenter available); under IPNG_STATS_E2E=1 it fails
// instead.
func RequireNetns(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, bin := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		Skip(t, "privileged test needs "+strings.Join(missing, ", "))
	}
}

// CreateNS creates the network namespace name ("ip netns add"), with
// rp_filter off and no duplicate address detection (set before any device
// exists, so every device inherits them). The caller removes it (Remove).
func CreateNS(name string) (*NS, error) {
	ns := &NS{Name: name, Path: "/run/netns/" + name}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	err := ns.Sysctl(
		"ipv4/conf/all/rp_filter", "0", "ipv4/conf/default/rp_filter", "0",
		"ipv6/conf/all/accept_dad", "0", "ipv6/conf/default/accept_dad", "0",
	)
	return ns, err
}

// NewNS creates a uniquely named network namespace "<prefix>-<random>"
// (see CreateNS), deleted at cleanup. It skips (fails under
// IPNG_STATS_E2E=1) unless RequireNetns holds.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireNetns(t)
	var ns *NS
	var err error
	for try := 0; try < 5; try++ {
		if ns, err = CreateNS(prefix + "-" + RandomID()); ns != nil {
			break
		}
	}
	if ns != nil {
		t.Cleanup(func() {
			if err := ns.Remove(); err != nil {
				t.Errorf("netns cleanup: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// RandomID returns 6 random hex digits, for names that parallel test
// binaries must not share.
func RandomID() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// NS is a named network namespace, bind-mounted at /run/netns/<Name>.
type NS struct {
	Name string
	Path string // /run/netns/<Name>

	// V4 and V6 are set by internal/testenv/topo: this namespace's own
	// address on its link towards srv (lb: its tun0 address; cl: its
	// address towards lb), the source addresses srv sees for connections to
	// the VIPs. Zero for srv and outside a topology.
	V4, V6 netip.Addr
}

// Role returns the last "-"-separated part of the name: in a topology
// (internal/testenv/topo) "srv", "c1", "c2", "lb", "c4" or "cl".
func (ns *NS) Role() string { return ns.Name[strings.LastIndex(ns.Name, "-")+1:] }

// Do runs fn on a fresh goroutine locked to an OS thread that has entered
// ns, and returns fn's error (or the error entering the namespace). The
// thread is never unlocked, so the Go runtime terminates it when fn returns
// instead of reusing a thread in the wrong namespace. fn may start other
// goroutines, but those run in the test binary's namespace.
func (ns *NS) Do(t testing.TB, fn func() error) error {
	if t != nil {
		t.Helper()
	}
	return ns.do(fn)
}

func (ns *NS) do(fn func() error) error { return <-ns.Go(fn) }

// Go is Do without waiting: it starts fn on a thread in ns and returns the
// channel that receives fn's error (or the error entering the namespace),
// e.g. for a function that runs until its context is cancelled.
func (ns *NS) Go(fn func() error) <-chan error {
	errc := make(chan error, 1)
	go func() {
		sent := false
		defer func() { // fn panicked or called runtime.Goexit (t.FailNow)
			if !sent {
				errc <- fmt.Errorf("netns %s: fn panicked or called runtime.Goexit: %v", ns.Name, recover())
			}
		}()
		runtime.LockOSThread() // deliberately never unlocked
		fd, err := unix.Open(ns.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err != nil {
			err = fmt.Errorf("enter netns %s: %w", ns.Name, err)
		} else {
			err = fn()
		}
		sent = true
		errc <- err
	}()
	return errc
}

// Dial connects from inside ns. The socket is created on a thread in ns,
// so Dial can replace net.Dialer.DialContext, e.g. in http.Transport.
func (ns *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return ns.DialFrom(ctx, network, "", addr)
}

// DialFrom is Dial with the local address laddr ("ip:port", port may be 0)
// bound first; laddr "" means any.
func (ns *NS) DialFrom(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	// FallbackDelay < 0 disables Happy Eyeballs, which would otherwise dial
	// from a second goroutine, i.e. from a thread outside ns.
	d := net.Dialer{FallbackDelay: -1}
	if laddr != "" {
		var err error
		switch {
		case strings.HasPrefix(network, "tcp"):
			d.LocalAddr, err = net.ResolveTCPAddr(network, laddr)
		case strings.HasPrefix(network, "udp"):
			d.LocalAddr, err = net.ResolveUDPAddr(network, laddr)
		default:
			err = fmt.Errorf("DialFrom: unsupported network %q", network)
		}
		if err != nil {
			return nil, err
		}
	}
	var c net.Conn
	err := ns.do(func() (err error) {
		c, err = d.DialContext(ctx, network, raddr)
		return err
	})
	return c, err
}

// Listen creates a listener inside ns. TCP listeners are plain TCP: Go
// listeners default to MPTCP where the kernel has it, and an MPTCP socket
// rejects e.g. IP_PKTINFO (EOPNOTSUPP). Use ListenWith for Go's default.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	return ns.ListenWith(context.Background(), &lc, network, addr)
}

// ListenWith creates a listener inside ns with lc, e.g. with a Control
// function setting socket options before bind, or SetMultipathTCP(false).
//
// EADDRINUSE on a fixed port is retried for up to 3 s: a socket closed a
// moment ago can linger while a child forked by a concurrent exec (any
// parallel test running ip, nsenter...) still holds its descriptor, until
// that child execs. A genuinely busy port therefore fails after 3 s.
func (ns *NS) ListenWith(ctx context.Context, lc *net.ListenConfig, network, addr string) (net.Listener, error) {
	deadline := time.Now().Add(listenRetry)
	for {
		var l net.Listener
		err := ns.do(func() (err error) {
			l, err = lc.Listen(ctx, network, addr)
			return err
		})
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || strings.HasSuffix(addr, ":0") ||
			time.Now().After(deadline) || ctx.Err() != nil {
			return l, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FreePort returns a TCP port that was free on all addresses in ns a
// moment ago. Ports are per namespace, so only ns itself can race for it.
func (ns *NS) FreePort(t testing.TB) int {
	t.Helper()
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	l, err := ns.ListenWith(context.Background(), &lc, "tcp", "[::]:0")
	if err != nil {
		t.Fatalf("FreePort in %s: %v", ns.Name, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Exec returns a command that runs name inside ns. It uses
// "nsenter --net=<Path>", which enters only the network namespace; unlike
// "ip netns exec" it does not remount /sys, so /sys/fs/bpf stays visible.
// nsenter execs name, so the command's pid is name's pid.
func (ns *NS) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path, "--", name}, args...)...)
}

// Ifindex returns the interface index of dev inside ns.
func (ns *NS) Ifindex(t testing.TB, dev string) uint32 {
	t.Helper()
	var idx int
	err := ns.do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			idx = ifi.Index
		}
		return err
	})
	if err != nil {
		t.Fatalf("ifindex of %s in %s: %v", dev, ns.Name, err)
	}
	return uint32(idx)
}

// Run runs "ip -n <Name> args..." and fails the test (with the output) on
// error.
func (ns *NS) Run(t testing.TB, args ...string) {
	t.Helper()
	ns.Out(t, args...)
}

// Out is Run returning ip's output.
func (ns *NS) Out(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.IP(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// IP runs "ip -n <Name> args..." and returns its output, or an error
// with the output.
func (ns *NS) IP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"-n", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Sysctl writes net sysctls inside ns; keys are paths below /proc/sys/net,
// e.g. "ipv4/conf/all/rp_filter". Each "*" in a key is expanded (glob).
func (ns *NS) Sysctl(kv ...string) error {
	return ns.do(func() error {
		for i := 0; i+1 < len(kv); i += 2 {
			paths, err := filepath.Glob("/proc/sys/net/" + kv[i])
			if err == nil && len(paths) == 0 {
				err = os.ErrNotExist
			}
			for _, p := range paths {
				if err == nil {
					err = os.WriteFile(p, []byte(kv[i+1]), 0)
				}
			}
			if err != nil {
				return fmt.Errorf("netns %s: sysctl net/%s=%s: %w", ns.Name, kv[i], kv[i+1], err)
			}
		}
		return nil
	})
}

// Remove deletes the namespace's bind mount. The namespace dies with its
// last reference (open sockets, processes), taking its devices with it.
func (ns *NS) Remove() error {
	_, err := os.Stat(ns.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "delete", ns.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns delete %s: %v: %s", ns.Name, err, out)
	}
	return nil
}

// LinkPackets returns the rx and tx packet counters of dev in ns.
func (ns *NS) LinkPackets(t testing.TB, dev string) (rx, tx uint64) {
	t.Helper()
	var v []struct {
		Stats64 struct {
			RX, TX struct{ Packets uint64 }
		}
	}
	out := ns.Out(t, "-s", "-j", "link", "show", "dev", dev)
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v) != 1 {
		t.Fatalf("parse %q: %v", out, err)
	}
	return v[0].Stats64.RX.Packets, v[0].Stats64.TX.Packets
}
