//go:build k8s

package k8s

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/ipngstats"
	"github.com/ipng/ipng-stats/loader"
)

// A server outside the agent's pod: the tag server, a Go server built on
// the ipngstats front door, runs on the node (the cluster's netns, a cgroup
// below the kubelet's cgroupRoot, so the agent's sock_ops program stamps
// its sockets) and reads the agent's maps pinned on the node's bpffs. Its
// connections outlive the agent's pod, unlike those of the agent's own
// proxy.
const (
	// tagVIP is the tag server's address on edge0: a series of its own
	// (the proxy's connections are on vip).
	tagVIP  = "192.0.2.3"
	tagPort = "8090"

	helperEnv  = "IPNG_K8S_HELPER" // "tagserver": TestMain runs tagServerMain
	envTagPins = "IPNG_K8S_PINS"   // the agent's pin dir on the node
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "tagserver" {
		if err := tagServerMain(); err != nil {
			fmt.Fprintf(os.Stderr, "tagserver: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tagServerMain listens on tagVIP:tagPort through the
// front door (attribution mode bpf: the agent's pins, nothing else) and
// answers each connection with one line
//
//	device ifindex method server_tag stamp_tag
//
// where server_tag is the tag of its own bindings (edge0: edge) and
// stamp_tag the tag the agent's program recorded in the socket's stamp at
// accept (the tag the agent counts the connection under), then holds the
// connection until the client closes it.
func tagServerMain() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pins := os.Getenv(envTagPins)
	acct, err := ipngstats.Parse([]byte(fmt.Sprintf(
		"attribution: {mode: bpf}\nbpf: {pin_dir: %q}\nbindings: {devices: [{device: edge0, tag: %s}]}\n",
		pins, edgeTag)), "tagserver")
	if err != nil {
		return err
	}
	defer acct.Close()
	// The stamp's tag id, named by the agent's pinned tag table.
	maps, err := loader.OpenPinned(pins)
	if err != nil {
		return err
	}
	defer maps.Close()
	names := maps.PinnedTagNames() // not safe for concurrent use: the accept loop only
	ln, err := acct.Listen(ctx, "tcp", net.JoinHostPort(tagVIP, tagPort))
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		info, _ := attribution.InfoOf(c)
		stampTag := "-"
		if st, ok, err := stampOf(c, maps); err != nil {
			stampTag = "error:" + strings.ReplaceAll(err.Error(), " ", "_")
		} else if ok && st.TagID != 0 {
			if n, ok := names(st.TagID); ok {
				stampTag = n
			} else {
				stampTag = "id" + strconv.Itoa(int(st.TagID))
			}
		}
		dev := info.Device
		if dev == "" {
			dev = "-"
		}
		fmt.Fprintf(c, "%s %d %s %s %s\n", dev, info.Ifindex, info.Method, info.Tag, stampTag)
		go func() {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}()
	}
}

// stampOf looks up the program's stamp of an accepted connection by its
// socket.
func stampOf(c net.Conn, maps *loader.Maps) (loader.Stamp, bool, error) {
	for range 8 {
		switch v := c.(type) {
		case *attribution.Conn:
			rc, err := v.SyscallConn()
			if err != nil {
				return loader.Stamp{}, false, err
			}
			var (
				st    loader.Stamp
				found bool
				lerr  error
			)
			if err := rc.Control(func(fd uintptr) { st, found, lerr = maps.LookupFd(int(fd)) }); err != nil {
				return st, false, err
			}
			return st, found, lerr
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return loader.Stamp{}, false, fmt.Errorf("%T is no attributed connection", c)
		}
	}
	return loader.Stamp{}, false, errors.New("wrapped too deep")
}

// startTagServer runs the tag server on the node: this test binary again,
// under nsenter in the cluster's netns, joining a cgroup below the
// kubelet's cgroupRoot (the cluster's cleanup kills and removes it too).
func (c *cluster) startTagServer(t *testing.T) {
	// Started inside a cgroup below the kubelet's cgroupRoot in the cgroup2
	// hierarchy, where the agent attaches: its sockets are the cgroup's.
	cg := testenv.NewCgroup(t, c.cgroup2())
	log, err := os.Create(c.path("logs", "tagserver.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.netns.Exec(context.Background(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=tagserver", envTagPins+"="+filepath.Join(c.bpffs(), c.id))
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.startProc(func() error { return cg.Start(cmd) }); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); log.Close() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("first line %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err = <-ready:
	case err = <-done:
		err = fmt.Errorf("exited: %v", err)
	case <-time.After(2 * time.Minute):
		err = errors.New("not ready after 2m")
	}
	if err != nil {
		b, _ := os.ReadFile(c.path("logs", "tagserver.log"))
		t.Fatalf("tag server: %v\n%s", err, b)
	}
}

// tagConn is one connection to the tag server, held open, and its answer.
type tagConn struct {
	conn                                net.Conn
	device, method, serverTag, stampTag string
	ifindex                             int
}

// tagConnect opens a connection from the client netns to the tag server
// and reads its answer; it stays open until closed (or the test ends).
func (c *cluster) tagConnect(t *testing.T, client *testenv.NS) *tagConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, "tcp", net.JoinHostPort(tagVIP, tagPort))
	if err != nil {
		t.Fatalf("tag server: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("tag server reply: %v", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	tc := &tagConn{conn: conn}
	if _, err := fmt.Sscanf(line, "%s %d %s %s %s", &tc.device, &tc.ifindex, &tc.method, &tc.serverTag, &tc.stampTag); err != nil {
		t.Fatalf("tag server reply %q: %v", line, err)
	}
	return tc
}

// check: the connection arrived on edge0, was found by the agent's program
// (its stamp, not a fallback) and was stamped with wantStamp, the tag edge0
// had in the agent's configuration at accept.
func (tc *tagConn) check(t *testing.T, when string, edgeIfindex int, wantStamp string) {
	t.Helper()
	if tc.device != "edge0" || tc.ifindex != edgeIfindex || (tc.method != "sk_storage" && tc.method != "cookie") ||
		tc.serverTag != edgeTag || tc.stampTag != wantStamp {
		t.Errorf("connection %s: device %s ifindex %d method %s server tag %s stamp tag %s; want edge0 %d, sk_storage or cookie, %s, %s",
			when, tc.device, tc.ifindex, tc.method, tc.serverTag, tc.stampTag, edgeIfindex, edgeTag, wantStamp)
	}
}

// conns waits until the agent's scrape has exactly the tag server's
// connection counts: ipng_connections_total and ipng_connections_active of
// (tag, tagVIP) for each tag in want ({total, active}).
func (c *cluster) conns(what string, want map[string][2]float64) {
	c.t.Helper()
	c.waitFor(what, 2*time.Minute, func() error {
		m, err := c.scrape()
		if err != nil {
			return err
		}
		var bad []string
		for tag, w := range want {
			total := testenv.Samples(m, "ipng_connections_total", "source_tag", "vip")[tag+" "+tagVIP]
			active := testenv.Samples(m, "ipng_connections_active", "source_tag", "vip")[tag+" "+tagVIP]
			if total != w[0] || active != w[1] {
				bad = append(bad, fmt.Sprintf("%s: total %v active %v, want %v %v", tag, total, active, w[0], w[1]))
			}
		}
		if bad != nil {
			var lines []string
			for _, l := range strings.Split(m, "\n") {
				if strings.HasPrefix(l, "ipng_connections_") {
					lines = append(lines, l)
				}
			}
			return fmt.Errorf("%s; all:\n%s", strings.Join(bad, "; "), strings.Join(lines, "\n"))
		}
		return nil
	})
}
