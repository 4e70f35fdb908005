package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
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

// orderLog is a log sink that records, when the node says it runs, what
// the parts had done by then.
type orderLog struct {
	mu      sync.Mutex
	events  *[]string
	buf     bytes.Buffer
	running chan struct{} // closed at "agent running"
}

func (l *orderLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if bytes.Contains(p, []byte("agent running")) {
		*l.events = append(*l.events, "agent running")
		select {
		case <-l.running:
		default:
			close(l.running)
		}
	}
	return len(p), nil
}

// TestPartStart: the parts' Start steps run in order once the node is
// built and the hooks are done, each complete before any part runs and
// before the node says it runs and is ready (a handshake part's programs
// are attached by then); a Start's error stops the start before anything
// runs.
func TestPartStart(t *testing.T) {
	var events []string
	logs := &orderLog{events: &events, running: make(chan struct{})}
	mu := &logs.mu
	add := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	var node *Node
	part := func(name string, startErr error) func(*Node) (Part, error) {
		return func(n *Node) (Part, error) {
			node = n
			return Part{Name: name,
				Start: func(context.Context) error {
					// Some work, long enough for a node that does not
					// wait for it to get ahead.
					for range 100 {
						runtime.Gosched()
					}
					ready := node.ready.Load()
					add(fmt.Sprintf("%s started (ready %v)", name, ready))
					return startErr
				},
				Run: func(ctx context.Context) error {
					add(name + " ran")
					<-ctx.Done()
					return nil
				}}, nil
		}
	}
	opts := Options{Role: RoleAgent, Load: testConfig(t, false), LogOutput: logs,
		Parts:       []func(*Node) (Part, error){part("a", nil), part("b", nil)},
		AfterAttach: []func(*Node) error{func(*Node) error { add("hook"); return nil }}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()
	select {
	case <-logs.running:
	case err := <-done:
		t.Fatalf("node stopped at its start: %v\n%s", err, logs.buf.String())
	case <-time.After(30 * time.Second):
		t.Fatal("node not running after 30s")
	}
	cancel()
	if err := <-done; err != nil { // every Run has returned
		t.Fatalf("node stopped with %v", err)
	}
	mu.Lock()
	got := strings.Join(events, "; ")
	mu.Unlock()
	// Run order among parts is the scheduler's: compare what precedes the
	// Runs and the log line.
	wantPrefix := "hook; a started (ready false); b started (ready false); "
	if !strings.HasPrefix(got, wantPrefix) {
		t.Errorf("events:\n got %q\nwant them to begin %q", got, wantPrefix)
	}
	for _, e := range []string{"a ran", "b ran", "agent running"} {
		if !strings.Contains(got, e) {
			t.Errorf("events %q: no %q", got, e)
		}
	}

	// A Start that fails: the node stops with its error, nothing runs.
	events = nil
	startErr := errors.New("attaching: test")
	opts.Parts = []func(*Node) (Part, error){part("a", startErr), part("b", nil)}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Run(ctx, opts)
	if !errors.Is(err, startErr) || !strings.HasPrefix(err.Error(), "a: ") {
		t.Errorf("Run = %v, want a's Start error, prefixed with its name", err)
	}
	mu.Lock()
	got = strings.Join(events, "; ")
	mu.Unlock()
	if want := "hook; a started (ready false)"; got != want {
		t.Errorf("after a failed Start, events %q, want %q", got, want)
	}
}
