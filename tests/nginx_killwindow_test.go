package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/nginxlog"
)

// TestNginxKilledBeforeFree: the agent SIGKILLed between recording a batch
// of nginx lines and freeing it in the spool (the fault point
// IPNG_STATS_FAULT=nginx-before-free stops the ingest exactly there), then
// restarted: every request is counted exactly once, summed over the
// incarnations, each taken at what a scrape of it showed.
//
//  1. Agent A counts the first requests and is SIGKILLed; what it counted
//     is in the spool no more (counted is freed: no wait).
//  2. Requests while no agent runs: nginx appends them to the spool.
//  3. Agent B, with the fault point armed, records them all in its first
//     batch and stops before freeing them. A scrape now must not see them:
//     the spool still holds them (it waits for the batch; the test gives
//     it the scrape client's 3 s). B is SIGKILLed.
//  4. Agent C counts exactly what no scrape of A or B showed, and frees it.
//
// Before, a scrape in the window showed the batch and C counted it again.
func TestNginxKilledBeforeFree(t *testing.T) {
	n := setupNginxEnv(t, 1, "")
	n.startNginx()
	a := &ingestAgent{n: n, cfg: filepath.Join(n.dir, "agent-nginx.yml"), pins: topo.PinDir(t)}
	a.writeConfig(bindingsYAML)
	a.start()

	sent := map[string]uint64{}
	send := func(k int) {
		t.Helper()
		for _, fam := range []string{"ipv4", "ipv6"} {
			dev := map[string]string{"ipv4": "eth1", "ipv6": "eth2"}[fam]
			ns := map[string]*topo.NS{"ipv4": n.topo.C1, "ipv6": n.topo.C2}[fam]
			c := n.client(ns, fam, n.port)
			for i := range k {
				code := nginxCodes[i%len(nginxCodes)]
				if err := c.get(code); err != nil {
					t.Fatal(err)
				}
				sent[expectedTag(dev, fam)+" "+n.vipLabel(fam)+" "+codeClass(code)]++
			}
		}
	}
	carried := map[string]uint64{} // what the killed agents' scrapes showed
	rest := func() map[string]uint64 {
		want := map[string]uint64{}
		for k, v := range sent {
			if v > carried[k] {
				want[k] = v - carried[k]
			}
		}
		return want
	}

	// 1. A counts, and what it counts is freed with it.
	send(20)
	a.waitRequests("agent A", sent)
	if err := spoolConsumed(n.logFile); err != nil {
		t.Errorf("agent A: the requests are counted but not freed: %v", err)
	}
	addCounts(carried, sent)
	a.proc.stop(t, syscall.SIGKILL)

	// 2. While no agent runs.
	send(30)

	// 3. B stops in the window: recorded, not freed.
	cmd := n.topo.Srv.Exec(context.Background(), agentBin, "agent", "--config", a.cfg,
		"--bpf.cgroup", n.cg.Path, "--bpf.pin-dir", a.pins, "--web.listen-address", ingestAgentAddr)
	cmd.Env = append(os.Environ(), nginxlog.FaultEnv+"="+nginxlog.FaultBeforeFree)
	a.proc = n.start("agent-nginx-fault", cmd, false)
	testenv.Eventually(t, 20*time.Second, func() bool {
		out := a.proc.out.String()
		return strings.Contains(out, "fault point reached") && strings.Contains(out, `msg="agent running"`)
	}, "agent B running, at the fault point")
	if err := spoolConsumed(n.logFile); err == nil {
		t.Fatal("agent B at the fault point, but the spool holds no unread lines: the fault point is not between recording and freeing")
	}
	if got, err := a.requests(); err == nil {
		// What a scrape shows is counted: a restarted agent must not count
		// it again. It must show nothing of the batch.
		t.Errorf("a scrape of agent B in the window answered: %v; the spool still holds those lines (the next agent counts them again)", got)
		addCounts(carried, got)
	} else {
		t.Logf("scrape of agent B in the window: %v (waits for the batch)", err)
	}
	a.proc.stop(t, syscall.SIGKILL)

	// 4. C counts the rest exactly, and frees it.
	a.start()
	a.waitRequests("agent C after B was killed in the window", rest())
	if err := spoolConsumed(n.logFile); err != nil {
		t.Errorf("agent C: %v", err)
	}
	send(10)
	a.waitRequests("agent C, more requests", rest())
}
