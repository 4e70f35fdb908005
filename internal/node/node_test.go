package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// testConfig is a node configuration that needs no privilege: attribution
// by IP_PKTINFO, every port on loopback chosen by the kernel. withProxy adds
// a proxy listener.
func testConfig(t *testing.T, withProxy bool) func() (*config.Config, error) {
	t.Helper()
	y := "web:\n  listen_address: 127.0.0.1:0\nattribution:\n  mode: fallback\n"
	if withProxy {
		y += "proxy:\n  enabled: true\n  listeners:\n    - address: " + freeAddr(t) + "\n      upstream: app\n" +
			"  upstreams:\n    - name: app\n      servers: [127.0.0.1:9]\n"
	}
	if _, err := config.Parse([]byte(y), "node.yml"); err != nil {
		t.Fatal(err)
	}
	return func() (*config.Config, error) { return config.Parse([]byte(y), "node.yml") }
}

// freeAddr is a loopback address with a port that was free a moment ago
// (proxy.listeners refuses port 0).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// logBuffer is a log sink that tells when a line containing want arrives.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newLogBuffer(want string) *logBuffer { return &logBuffer{want: want, seen: make(chan struct{})} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.want != "" && strings.Contains(l.buf.String(), l.want) {
		l.once.Do(func() { close(l.seen) })
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// runUntilRunning runs a node of opts until its parts run, calls fn, then
// stops the node and returns its log.
func runUntilRunning(t *testing.T, opts Options, fn func()) string {
	t.Helper()
	logs := newLogBuffer("")
	opts.LogOutput = logs
	running := make(chan struct{})
	opts.Parts = append(opts.Parts, func(*Node) (Part, error) {
		return Part{Name: "test", Run: func(ctx context.Context) error {
			close(running)
			<-ctx.Done()
			return nil
		}}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()
	select {
	case <-running:
		fn()
	case err := <-done:
		t.Fatalf("node stopped at its start: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("node not running after 30s:\n%s", logs)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("node stopped with %v\n%s", err, logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("node still running 30s after its stop:\n%s", logs)
	}
	return logs.String()
}

func gcPercent(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("/gc/gogc:percent unsupported")
	}
	return s[0].Value.Uint64()
}

// TestGCPercent: a node that runs the proxy collects at GOGC=400 whether it
// is the proxy command or the agent with proxy.enabled (the agent used to
// keep the default); without the proxy, or with GOGC set, the setting is
// left alone.
func TestGCPercent(t *testing.T) {
	before := gcPercent(t)
	t.Cleanup(func() { debug.SetGCPercent(int(before)) })
	for _, tc := range []struct {
		name      string
		role      Role
		proxy     bool
		gogc      string
		wantProxy bool
	}{
		{"agent with proxy", RoleAgent, true, "", true},
		{"proxy", RoleProxy, true, "", true},
		{"agent without proxy", RoleAgent, false, "", false},
		{"proxy with GOGC set", RoleProxy, true, "100", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", tc.gogc)
			debug.SetGCPercent(100)
			var got uint64
			runUntilRunning(t, Options{Role: tc.role, Load: testConfig(t, tc.proxy)}, func() { got = gcPercent(t) })
			want := uint64(100)
			if tc.wantProxy {
				want = ProxyGCPercent
			}
			if got != want {
				t.Errorf("GC percent %d while running, want %d", got, want)
			}
		})
	}
}

// TestSIGHUPDuringStart: a SIGHUP that arrives while the node starts (here:
// while it reads its configuration, the first step) is a reload applied
// once the node runs; it used to kill `ipng-stats proxy`, whose SIGHUP
// handler was installed only after its listeners were up. The node runs in
// a child process, which the signal would kill.
func TestSIGHUPDuringStart(t *testing.T) {
	if role := os.Getenv("IPNG_NODE_TEST_CHILD"); role != "" {
		sighupChild(t, role)
		return
	}
	for _, role := range []string{"agent", "proxy"} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSIGHUPDuringStart$", "-test.count=1")
			cmd.Env = append(os.Environ(), "IPNG_NODE_TEST_CHILD="+role)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s node with a SIGHUP during its start: %v\n%s", role, err, out)
			}
			if !strings.Contains(string(out), "configuration reloaded") {
				t.Errorf("%s node: the SIGHUP sent during its start was not applied as a reload:\n%s", role, out)
			}
		})
	}
}

func sighupChild(t *testing.T, role string) {
	logs := newLogBuffer("configuration reloaded")
	load, first := testConfig(t, true), true
	opts := Options{Role: RoleAgent, LogOutput: logs, Load: func() (*config.Config, error) {
		if first {
			first = false
			if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
				return nil, err
			}
		}
		return load()
	}}
	if role == "proxy" {
		opts.Role = RoleProxy
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()
	select {
	case <-logs.seen:
	case err := <-done:
		t.Fatalf("node stopped: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("no reload after 30s:\n%s", logs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("node stopped with %v", err)
	}
	fmt.Print(logs.String())
}

// TestReloadRefused: a reload to a file the start would refuse is logged
// and applies nothing; the node keeps its configuration.
func TestReloadRefused(t *testing.T) {
	load := testConfig(t, false)
	bad := false
	logs := newLogBuffer("")
	n, err := build(Options{Role: RoleAgent, LogOutput: logs, Load: func() (*config.Config, error) {
		if bad {
			return config.Parse([]byte("web:\n  config_file: /nonexistent/web.yml\nmetrics:\n  max_series: 7\n"), "bad.yml")
		}
		return load()
	}})
	if n != nil {
		defer n.close()
	}
	if err != nil {
		t.Fatal(err)
	}
	bad = true
	if next := n.reload(); next != nil {
		t.Fatalf("reload to a missing web config file accepted:\n%s", logs)
	}
	if s := logs.String(); !strings.Contains(s, "reload failed, keeping the running configuration") ||
		!strings.Contains(s, "/nonexistent/web.yml") || strings.Contains(s, "configuration reloaded") {
		t.Errorf("refused reload logged:\n%s", s)
	}
	bad = false
	if next := n.reload(); next == nil {
		t.Fatalf("reload to the good file refused:\n%s", logs)
	}
}

// TestAfterAttach: the hooks run once the node is built (attribution,
// collector, every part), before anything runs; a hook's error stops the
// start and is the node's error.
func TestAfterAttach(t *testing.T) {
	var order []string
	hookErr := errors.New("dropping capabilities: test")
	opts := Options{Role: RoleProxy, Load: testConfig(t, true), LogOutput: newLogBuffer(""),
		Parts: []func(*Node) (Part, error){func(*Node) (Part, error) {
			order = append(order, "part built")
			return Part{Name: "test", Run: func(context.Context) error {
				order = append(order, "part ran")
				return nil
			}}, nil
		}},
		AfterAttach: []func(*Node) error{
			func(n *Node) error {
				var names []string
				for _, p := range n.parts {
					names = append(names, p.Name)
				}
				order = append(order, "hook 1 "+strings.Join(names, ","))
				if n.Attributor == nil || n.Collector == nil || n.Registry == nil || n.Bindings == nil {
					t.Errorf("hook: node not assembled: %+v", n)
				}
				return nil
			},
			func(*Node) error { order = append(order, "hook 2"); return hookErr },
			func(*Node) error { order = append(order, "hook 3"); return nil },
		}}
	if err := Run(context.Background(), opts); !errors.Is(err, hookErr) {
		t.Errorf("Run = %v, want the hook's error", err)
	}
	want := []string{"part built", "hook 1 exporter,collector,bindings,proxy,test", "hook 2"}
	if strings.Join(order, "; ") != strings.Join(want, "; ") {
		t.Errorf("order:\n got %q\nwant %q", order, want)
	}
}
