package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/nginxlog"
)

// nginxEnv is an env with Debian's nginx serving in srv's namespace and the
// test cgroup, its access log on a private 64 MiB tmpfs, the agent (BPF)
// running, and the nginx ingest helper consuming the log.
type nginxEnv struct {
	*env
	dir, spool, logFile, conf string
	dsPort                    int // dual-stack listener ([::] ipv6only=off)
	statePort                 int
	nginx                     *proc
	helperCfg                 string
	helperInRoot              bool // run the helper in the root namespace, not srv's
	mu                        sync.Mutex
	finals                    []nginxState // final states of stopped helpers
}

// codes are the status codes the test server returns, by path.
var nginxCodes = []int{200, 301, 404, 503}

// newNginxEnv starts nginx with workers workers and the access_log
// directive accessLog ("": the shipped one; "{log}" stands for the spool's
// log file, "{dir}" for the nginx directory, outside the spool), and an
// agent with agentYAML added to its configuration.
func newNginxEnv(t *testing.T, workers int, accessLog string, agentYAML ...string) *nginxEnv {
	t.Helper()
	n := setupNginxEnv(t, workers, accessLog, agentYAML...)
	n.startAgent()
	n.startNginx()
	return n
}

// setupNginxEnv is newNginxEnv without starting the agent and nginx: the
// spool, nginx's configuration and the helper's are written.
func setupNginxEnv(t *testing.T, workers int, accessLog string, agentYAML ...string) *nginxEnv {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		testenv.Skip(t, "nginx not installed (apt-get install nginx)")
	}
	dir, err := os.MkdirTemp("/run", "ipngt-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	// The helper consumes nginx's log from the agent's pins; the agent
	// keeps the 4-tuple map only when its own ingest is on, so it runs one
	// on a log nobody writes.
	idle := fmt.Sprintf("nginx:\n  enabled: true\n  log_file: %s\n", filepath.Join(dir, "agent-idle", "access.log"))
	n := &nginxEnv{env: newEnv(t, idle+strings.Join(agentYAML, ""))}
	n.dir, n.spool = dir, filepath.Join(dir, "spool")
	if err := os.Mkdir(n.spool, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", n.spool, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64m,mode=0755"); err != nil {
		t.Fatalf("mounting the spool tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(n.spool, unix.MNT_DETACH) })
	n.logFile = filepath.Join(n.spool, "access.log")
	ports := n.distinctPorts(2, n.port, 9113, 9114)
	n.dsPort, n.statePort = ports[0], ports[1]
	if accessLog == "" {
		accessLog = nginxlog.AccessLog(n.logFile)
	}
	accessLog = strings.ReplaceAll(strings.ReplaceAll(accessLog, "{log}", n.logFile), "{dir}", dir)
	n.conf = filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(n.conf, []byte(n.nginxConf(workers, accessLog)), 0o644); err != nil {
		t.Fatal(err)
	}
	n.helperCfg = filepath.Join(dir, "helper.yml")
	yml := bindingsYAML + fmt.Sprintf("nginx:\n  enabled: true\n  log_file: %s\n  poll_interval: 20ms\n", n.logFile)
	if err := os.WriteFile(n.helperCfg, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *nginxEnv) nginxConf(workers int, accessLog string) string {
	var loc strings.Builder
	for _, c := range nginxCodes {
		body := fmt.Sprintf("\"%d\\n\"", c)
		if c/100 == 3 {
			body = "/moved" // the Location of a redirect
		}
		fmt.Fprintf(&loc, "    location = /%d { return %d %s; }\n", c, c, body)
	}
	server := func(listen, name string) string {
		return fmt.Sprintf("  server {\n%s    server_name %s;\n%s  }\n", listen, name, loc.String())
	}
	return fmt.Sprintf(`worker_processes %d;
user www-data;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 1024; }
http {
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  keepalive_requests 100000;
  %[3]s
  %[4]s
%[5]s%[6]s%[7]s}
`, workers, n.dir, nginxlog.LogFormat(), accessLog,
		server(fmt.Sprintf("    listen %d default_server;\n    listen [::]:%d default_server;\n", n.port, n.port), "a.example"),
		server(fmt.Sprintf("    listen %d;\n    listen [::]:%d;\n", n.port, n.port), "b.example"),
		server(fmt.Sprintf("    listen [::]:%d ipv6only=off;\n", n.dsPort), "dualstack.example"))
}

// nginxCmd runs the nginx binary with this env's prefix and configuration.
func (n *nginxEnv) nginxCmd(args ...string) *exec.Cmd {
	return n.topo.Srv.Exec(context.Background(), "nginx",
		append([]string{"-p", n.dir, "-e", filepath.Join(n.dir, "error.log"), "-c", n.conf}, args...)...)
}

func (n *nginxEnv) startNginx() {
	n.t.Helper()
	cmd := n.nginxCmd("-g", "daemon off;")
	cmd.WaitDelay = time.Second // workers inherit the output pipes
	n.nginx = n.start("nginx", cmd, true)
	n.t.Cleanup(n.killNginx) // runs before start's cleanup: stop the workers too
	testenv.Eventually(n.t, 10*time.Second, func() bool {
		select {
		case <-n.nginx.done:
			b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
			n.t.Fatalf("nginx exited: %v\n%s\n%s", n.nginx.err, n.nginx.out.String(), b)
		default:
		}
		c, err := n.topo.Srv.Dial(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "nginx listening")
}

// killNginx kills every process of the test cgroup (only nginx runs there).
func (n *nginxEnv) killNginx() {
	pids, _ := n.cg.Pids()
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	if n.t.Failed() {
		b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
		n.t.Logf("--- nginx error.log:\n%s", b)
	}
}

// signalNginx runs `nginx -s sig` (reload, reopen).
func (n *nginxEnv) signalNginx(sig string) {
	n.t.Helper()
	if out, err := n.nginxCmd("-s", sig).CombinedOutput(); err != nil {
		n.t.Fatalf("nginx -s %s: %v\n%s", sig, err, out)
	}
}

// startHelper starts the ingest helper and waits until it consumes.
func (n *nginxEnv) startHelper() *proc {
	n.t.Helper()
	ns := n.topo.Srv
	if n.helperInRoot {
		ns = nil
	}
	cmd := helperCmd(ns, envNginxHelper+"=1", envPins+"="+n.pinDir, envConfig+"="+n.helperCfg,
		envNginxState+"="+strconv.Itoa(n.statePort))
	return n.startReady("nginx-helper", "nginx helper", cmd, false, "ready", func(line string) {
		if s, ok := strings.CutPrefix(line, "final "); ok {
			var st nginxState
			if json.Unmarshal([]byte(s), &st) == nil {
				n.mu.Lock()
				n.finals = append(n.finals, st)
				n.mu.Unlock()
			}
		}
	})
}

// state asks the running helper for its counters.
func (n *nginxEnv) state() (nginxState, error) {
	var st nginxState
	tr := &http.Transport{DialContext: n.topo.Srv.Dial}
	if n.helperInRoot {
		tr.DialContext = (&net.Dialer{}).DialContext
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 3 * time.Second, Transport: tr}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", n.statePort))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitLines waits until the helper has read at least want lines and returns
// its state.
func (n *nginxEnv) waitLines(want uint64) nginxState {
	n.t.Helper()
	var st nginxState
	testenv.Eventually(n.t, 15*time.Second, func() bool {
		var err error
		st, err = n.state()
		// Every line handled to the end (recorded, or rejected without a
		// record), not only read.
		return err == nil && st.Stats.Lines >= want && st.Stats.Recorded+st.Stats.Rejected >= st.Stats.Lines
	}, "%d access-log lines", want)
	return st
}

// client sends HTTP requests from ns over one kept-alive connection.
type nginxClient struct {
	c    *http.Client
	base string
}

func (n *nginxEnv) client(ns *topo.NS, fam string, port int) *nginxClient {
	return n.clientKeepAlive(ns, fam, port, true)
}

// clientKeepAlive is client, with keepAlive false a new connection per
// request.
func (n *nginxEnv) clientKeepAlive(ns *topo.NS, fam string, port int, keepAlive bool) *nginxClient {
	host := netip.AddrPortFrom(n.topo.VIP4, uint16(port)).String()
	if fam == "ipv6" {
		host = netip.AddrPortFrom(n.topo.VIP6, uint16(port)).String()
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableKeepAlives: !keepAlive, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		switch fam {
		case "ipv6":
			return ns.Dial(ctx, "tcp6", host)
		case "mapped":
			return dialMapped(ns, netip.AddrFrom16(n.topo.VIP4.As16()), port)
		}
		return ns.Dial(ctx, "tcp4", host)
	}}
	n.t.Cleanup(tr.CloseIdleConnections)
	return &nginxClient{c: &http.Client{Transport: tr, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, base: "http://" + host}
}

// get requests /<code> and checks the status.
func (c *nginxClient) get(code int) error {
	return getStatus(c.c, fmt.Sprintf("%s/%d", c.base, code), code)
}

// getStatus GETs url, reads the body and checks the status is code.
func getStatus(c *http.Client, url string, code int) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != code {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return nil
}

// vipLabel is the vip label of a request of family fam.
func (n *nginxEnv) vipLabel(fam string) string {
	if fam == "ipv6" {
		return n.topo.VIP6.String()
	}
	return n.topo.VIP4.String()
}

func codeClass(code int) string { return strconv.Itoa(code/100) + "xx" }
