package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/nginxlog"
)

// ingestAgent is an `ipng-stats agent` with the nginx ingest, its own pins
// (kept on exit) and its scrape port, beside the agent newNginxEnv started.
type ingestAgent struct {
	n       *nginxEnv
	cfg     string
	pins    string
	logtail string   // nginx.logtail.target, "" for none
	wrap    []string // runs the agent through a wrapper (asSystemUser); nil: as root
	proc    *proc
}

const ingestAgentAddr = "127.0.0.1:9114" // inside srv's network namespace

func newIngestAgent(n *nginxEnv, logtail string) *ingestAgent {
	a := &ingestAgent{n: n, cfg: filepath.Join(n.dir, "agent-nginx.yml"), pins: topo.PinDir(n.t), logtail: logtail}
	a.writeConfig(bindingsYAML)
	a.start()
	return a
}

// writeConfig writes the agent's configuration: yml plus the ingest.
func (a *ingestAgent) writeConfig(yml string) {
	a.n.t.Helper()
	yml += fmt.Sprintf("nginx:\n  enabled: true\n  log_file: %s\n  poll_interval: 20ms\n", a.n.logFile)
	if a.logtail != "" {
		yml += "  logtail:\n    target: " + a.logtail + "\n"
	}
	yml += "bpf:\n  keep_on_exit: true\n"
	if err := os.WriteFile(a.cfg, []byte(yml), 0o644); err != nil {
		a.n.t.Fatal(err)
	}
}

func (a *ingestAgent) start() {
	a.n.t.Helper()
	a.proc = a.n.start("agent-nginx", execIn(a.n.topo.Srv, wrapped(a.wrap, agentBin, []string{"agent", "--config", a.cfg,
		"--bpf.cgroup", a.n.cg.Path, "--bpf.pin-dir", a.pins, "--web.listen-address", ingestAgentAddr})), false)
	a.proc.awaitRunning(a.n.t, `msg="agent running"`)
}

// reload rewrites the configuration and waits until the agent applied it.
func (a *ingestAgent) reload(yml string) {
	a.n.t.Helper()
	before := strings.Count(a.proc.out.String(), "configuration reloaded")
	a.writeConfig(yml)
	a.proc.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(a.n.t, 10*time.Second, func() bool {
		return strings.Count(a.proc.out.String(), "configuration reloaded") > before
	}, "reload")
}

// requests scrapes the agent: requests per "tag vip code".
func (a *ingestAgent) requests() (map[string]uint64, error) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: a.n.topo.Srv.Dial}}
	resp, err := client.Get("http://" + ingestAgentAddr + "/.well-known/ipng/statsz?format=json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var doc exporter.Document
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	return fixtures.DocRequests(&doc), nil
}

// waitRequests waits until the agent's counts equal want.
func (a *ingestAgent) waitRequests(step string, want map[string]uint64) {
	a.n.t.Helper()
	fixtures.WaitCounts(a.n.t, 20*time.Second, step+": requests per (tag, vip, code) on the agent's endpoint", a.requests, want)
}

// TestNginxTagAtAccept: a request is counted under the tag its connection's
// interface had when the connection was accepted, whatever happens before
// its log line is read. nginx buffers the log without a flush timer here,
// and `nginx -s reopen` writes the buffer out: every line below is read
// after the change it must not be affected by.
func TestNginxTagAtAccept(t *testing.T) {
	n := newNginxEnv(t, 1, "access_log {log} "+nginxlog.LogFormatName+" buffer=64k;")
	// The logtail receiver, in the agent's network namespace.
	var tail net.PacketConn
	if err := n.topo.Srv.Do(t, func() (err error) { tail, err = net.ListenPacket("udp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer tail.Close()
	a := newIngestAgent(n, tail.LocalAddr().String())
	vip := n.vipLabel("ipv4")
	want := map[string]uint64{}
	send := func(from string, count int) {
		t.Helper()
		p := map[string]path{"eth1": paths[0], "eth2": paths[1], "tun0": paths[2]}[from]
		cl := n.clientKeepAlive(p.ns(n.topo), "ipv4", n.port, false)
		for range count {
			if err := cl.get(200); err != nil {
				t.Fatalf("via %s: %v", from, err)
			}
		}
	}
	eth1Tag := func(tag string) string {
		return strings.Replace(bindingsYAML, "tag: tag1\n", "tag: "+tag+"\n", 1)
	}

	// A binding changed by SIGHUP while the lines are still buffered. A
	// kept-alive connection stays open across it: `conns` shows the tag it
	// was accepted under.
	held := n.client(paths[0].ns(n.topo), "ipv4", n.port)
	if err := held.get(200); err != nil {
		t.Fatal(err)
	}
	send("eth1", 6)
	a.reload(eth1Tag("tag1-new"))
	send("eth1", 4)
	if rows := n.conns(t, a.cfg, a.pins, asUser(65534, 65534, pinGroup(t, a.pins))); len(rows) != 1 || rows[0].SourceTag != "tag1" || rows[0].Device != "eth1" {
		t.Errorf("conns after the reload: %+v, want the kept-alive connection under tag1 on eth1", rows)
	}
	n.signalNginx("reopen")
	want["tag1 "+vip+" 2xx"] += 7
	want["tag1-new "+vip+" 2xx"] += 4
	a.waitRequests("binding changed by SIGHUP", want)

	// The tunnel re-created (a new ifindex) right after traffic passed.
	send("tun0", 5)
	n.topo.RecreateTunnel(t)
	n.signalNginx("reopen")
	want["maglev "+vip+" 2xx"] += 5
	a.waitRequests("tunnel re-created", want)

	// An interface renamed (its binding no longer matches) before the
	// lines are read.
	send("eth2", 5)
	renameLink(t, n, "eth2", "eth2x")
	defer renameLink(t, n, "eth2x", "eth2")
	n.signalNginx("reopen")
	want["tag2-v4 "+vip+" 2xx"] += 5
	a.waitRequests("interface renamed", want)
	// The logtail carries the device's name at accept, not its new name.
	if got := logtailDevices(t, tail, `"source_tag":"tag2-v4"`, 5); got["eth2"] != 5 || len(got) != 1 {
		t.Errorf("logtail devices of the renamed interface's lines: %v, want eth2: 5", got)
	}

	// Agent stopped, traffic served, bindings changed, agent started: the
	// backlog keeps the tags of when it was served.
	a.proc.stop(t, syscall.SIGTERM)
	send("eth1", 7)
	n.signalNginx("reopen")
	a.writeConfig(eth1Tag("tag1-third"))
	a.start()
	send("eth1", 3)
	n.signalNginx("reopen")
	// A new agent process counts from zero what it reads from now on: the
	// backlog and the new requests.
	want = map[string]uint64{"tag1-new " + vip + " 2xx": 7, "tag1-third " + vip + " 2xx": 3}
	a.waitRequests("agent restarted with a backlog", want)
}

// renameLink renames srv's dev (down, rename, up).
func renameLink(t *testing.T, n *nginxEnv, from, to string) {
	t.Helper()
	n.topo.Srv.Run(t, "link", "set", from, "down")
	n.topo.Srv.Run(t, "link", "set", from, "name", to)
	n.topo.Srv.Run(t, "link", "set", to, "up")
}

// logtailDevices reads logtail datagrams until want of them contain match
// (bounded), and counts the "device" of those.
func logtailDevices(t *testing.T, pc net.PacketConn, match string, want int) map[string]int {
	t.Helper()
	got := map[string]int{}
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for n := 0; n < want && time.Now().Before(deadline); {
		pc.SetReadDeadline(deadline)
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		line := string(buf[:k])
		if !strings.Contains(line, match) {
			continue
		}
		var rec struct {
			Device string `json:"device"`
		}
		if err := json.Unmarshal(buf[:k], &rec); err != nil {
			t.Errorf("logtail datagram %q: %v", line, err)
		}
		got[rec.Device]++
		n++
	}
	return got
}
