package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// bindingsYAML is the bindings section every e2e test uses: eth1 one tag for
// both families, eth2 one tag per family, the tunnel a tag of its own, mv0
// unbound (default tag).
const bindingsYAML = `bindings:
  default_tag: direct
  devices:
    - device: eth1
      tag: tag1
    - device: eth2
      family: ipv4
      tag: tag2-v4
    - device: eth2
      family: ipv6
      tag: tag2-v6
    - device: tun0
      tag: maglev
`

// expectedTag is what bindingsYAML gives a connection on dev of family fam
// ("ipv4" for v4-mapped too).
func expectedTag(dev, fam string) string {
	switch dev {
	case "eth1":
		return "tag1"
	case "eth2":
		return "tag2-" + map[string]string{"ipv4": "v4", "ipv6": "v6"}[fam]
	case "tun0":
		return "maglev"
	}
	return "direct"
}

// env is one test's world: a topology, a cgroup for the servers, a pin
// directory and a config file.
type env struct {
	t       *testing.T
	topo    *topo.Topo
	cg      *topo.Cgroup
	pinDir  string
	cfgPath string
	port    int
	// agentWrap runs startAgent's agent through a wrapper (setpriv: as the
	// system user, asSystemUser); nil: as root.
	agentWrap []string
}

func newEnv(t *testing.T, extraYAML string) *env {
	t.Helper()
	topo.Require(t)
	e := &env{t: t, topo: topo.New(t), cg: topo.NewCgroup(t)}
	e.pinDir = topo.PinDir(t)
	dir := t.TempDir()
	// Readable by nobody, who runs `ipng-stats conns` in some tests.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	e.cfgPath = filepath.Join(dir, "ipng-stats.yml")
	if err := os.WriteFile(e.cfgPath, []byte(bindingsYAML+extraYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	e.port = e.topo.Srv.FreePort(t)
	return e
}

// proc is a background process of a test, with its output kept for the log.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testenv.SyncBuffer
	done chan struct{}
	err  error
}

func (e *env) start(name string, cmd *exec.Cmd, inCgroup bool) *proc {
	e.t.Helper()
	p := &proc{name: name, cmd: cmd, out: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.out
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	var err error
	if inCgroup {
		err = e.cg.Start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		e.t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		p.stop(e.t, syscall.SIGKILL)
		if e.t.Failed() {
			e.t.Logf("--- output of %s:\n%s", name, p.out.String())
		}
	})
	return p
}

// stop signals the process and waits (bounded) for it to exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop on %v", p.name, sig)
	}
}

// startAgent runs `ipng-stats agent` in srv's namespace, attached to the
// test cgroup, and waits until its link is pinned.
func (e *env) startAgent(args ...string) *proc {
	e.t.Helper()
	all := append([]string{"agent", "--config", e.cfgPath, "--bpf.cgroup", e.cg.Path, "--bpf.pin-dir", e.pinDir,
		"--attribution.mode", "bpf", "--log.level", "debug"}, args...)
	p := e.start("agent", execIn(e.topo.Srv, wrapped(e.agentWrap, agentBin, all)), false)
	p.awaitRunning(e.t, `msg="agent running"`)
	return p
}

// wrapped is the command line of bin args run through wrap (nil:
// directly): the program first.
func wrapped(wrap []string, bin string, args []string) []string {
	return append(append(append([]string{}, wrap...), bin), args...)
}

// execIn runs argv (wrapped's result) in ns.
func execIn(ns *topo.NS, argv []string) *exec.Cmd {
	return ns.Exec(context.Background(), argv[0], argv[1:]...)
}

// awaitRunning waits (bounded) until the process logs msg, and fails the
// test if it exits first.
func (p *proc) awaitRunning(t *testing.T, msg string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		return strings.Contains(p.out.String(), msg)
	}, "%s running", p.name)
}

// startTagServer runs the tag server in srv's namespace and the test cgroup.
func (e *env) startTagServer(mode string) *proc {
	e.t.Helper()
	cmd := helperCmd(e.topo.Srv, helperEnv+"=tagserver", envMode+"="+mode, envPins+"="+e.pinDir,
		envConfig+"="+e.cfgPath, envPort+"="+strconv.Itoa(e.port))
	return e.startReady("tagserver-"+mode, "tag server", cmd, true, "ready", nil)
}

// helperCmd runs this test binary as a helper process (chosen by env, e.g.
// helperEnv+"=tagserver") in ns (nil: the root namespace).
func helperCmd(ns *topo.NS, env ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if ns == nil {
		cmd = exec.Command(os.Args[0], "-test.run=^$")
	} else {
		cmd = ns.Exec(context.Background(), os.Args[0], "-test.run=^$")
	}
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// startReady starts a helper as start does and waits (bounded) until the
// first line it prints is ready; it passes each later line to then (nil:
// they are read and dropped).
func (e *env) startReady(name, label string, cmd *exec.Cmd, inCgroup bool, ready string, then func(line string)) *proc {
	e.t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	p := e.start(name, cmd, inCgroup)
	first := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		if !sc.Scan() {
			first <- fmt.Errorf("no first line (%v)", sc.Err())
			return
		}
		if sc.Text() != ready {
			first <- fmt.Errorf("first line %q, want %q", sc.Text(), ready)
			return
		}
		first <- nil
		for sc.Scan() {
			if then != nil {
				then(sc.Text())
			}
		}
	}()
	select {
	case err := <-first:
		if err != nil {
			e.t.Fatalf("%s: %v\n%s", label, err, p.out.String())
		}
	case <-time.After(10 * time.Second):
		e.t.Fatalf("%s not ready\n%s", label, p.out.String())
	}
	return p
}

// reply is the tag server's answer for one connection.
type reply struct {
	Tag, Device string
	Ifindex     uint32
	Family      string
	Method      string
}

// client is one open connection and what the server said about it.
type client struct {
	conn  net.Conn
	reply reply
}

// families a client can connect with: IPv4, IPv6, and IPv4 from an AF_INET6
// socket (v4-mapped ::ffff:192.0.2.10).
var families = []string{"ipv4", "ipv6", "mapped"}

// connect dials the VIP from ns with the given family and reads the reply.
// The connection stays open until the caller closes it (or the test ends).
// connectClose opens n connections from ns to the tag server and closes
// each; a failed one fails the test.
func (e *env) connectClose(t *testing.T, ns *topo.NS, fam string, n int) {
	t.Helper()
	for range n {
		c, err := e.connect(ns, fam)
		if err != nil {
			t.Fatal(err)
		}
		c.conn.Close()
	}
}

func (e *env) connect(ns *topo.NS, fam string) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var (
		c   net.Conn
		err error
	)
	switch fam {
	case "ipv4":
		c, err = ns.Dial(ctx, "tcp4", netip.AddrPortFrom(e.topo.VIP4, uint16(e.port)).String())
	case "ipv6":
		c, err = ns.Dial(ctx, "tcp6", netip.AddrPortFrom(e.topo.VIP6, uint16(e.port)).String())
	case "mapped":
		c, err = dialMapped(ns, netip.AddrFrom16(e.topo.VIP4.As16()), e.port)
	default:
		err = fmt.Errorf("unknown family %q", fam)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", ns.Role(), fam, err)
	}
	e.t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s %s: reading reply: %w", ns.Role(), fam, err)
	}
	var r reply
	if _, err := fmt.Sscanf(line, "%s %s %d %s %s", &r.Tag, &r.Device, &r.Ifindex, &r.Family, &r.Method); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s %s: bad reply %q: %w", ns.Role(), fam, line, err)
	}
	c.SetReadDeadline(time.Time{})
	return &client{conn: c, reply: r}, nil
}

// dialMapped connects an AF_INET6 socket to a v4-mapped address from ns, as
// a dual-stack client does (Go's own dialer converts those to AF_INET).
func dialMapped(ns *topo.NS, addr netip.Addr, port int) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(nil, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval((3 * time.Second).Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		if err := unix.Connect(fd, &unix.SockaddrInet6{Port: port, Addr: addr.As16()}); err != nil {
			unix.Close(fd)
			return err
		}
		f := os.NewFile(uintptr(fd), "mapped")
		defer f.Close()
		c, err = net.FileConn(f)
		return err
	})
	return c, err
}

// ipngStats runs the ipng-stats CLI in srv's namespace and returns its
// standard output. An absolute first argument is a wrapper to run instead
// (e.g. setpriv ... -- agentBin ...).
func (e *env) ipngStats(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bin := agentBin
	if strings.HasPrefix(args[0], "/") {
		bin, args = args[0], args[1:]
	}
	cmd := e.topo.Srv.Exec(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), err
}
