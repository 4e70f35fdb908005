package tests

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// TestDSRTagged: a connection from cl whose SYN comes through lb and the
// tunnel, to the VIP on srv's lo, completes with the reply path leaving by
// eth5 (srv sends nothing into tun0), and is tagged with the tunnel's tag.
// The negative control, SO_BINDTODEVICE on tun0 timing out, is
// internal/testenv/topo's TestDSR.
func TestDSRTagged(t *testing.T) {
	e := newEnv(t, "")
	e.startAgent()
	e.startTagServer("bpf")
	tun0 := e.topo.Srv.Ifindex(t, "tun0")
	for _, fam := range families {
		// Warm neighbour caches first so the counters see only this connection.
		if c, err := e.connect(e.topo.Client, fam); err != nil {
			t.Fatal(err)
		} else {
			c.conn.Close()
		}
		time.Sleep(50 * time.Millisecond)
		_, tx0 := e.topo.Srv.LinkPackets(t, "tun0")
		c, err := e.connect(e.topo.Client, fam)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.conn.Write([]byte("request\n")); err != nil {
			t.Fatal(err)
		}
		_, tx1 := e.topo.Srv.LinkPackets(t, "tun0")
		if c.reply.Tag != "maglev" || c.reply.Ifindex != tun0 || c.reply.Method != "cookie" {
			t.Errorf("%s: DSR connection attributed %+v, want tag maglev on tun0 (%d) by cookie", fam, c.reply, tun0)
		}
		if tx1 != tx0 {
			t.Errorf("%s: srv sent %d packets into tun0 during a DSR connection; replies must leave by eth5", fam, tx1-tx0)
		}
		c.conn.Close()
	}
}

// TestTunnelRecreated: the tunnel is deleted and created again with a new
// ifindex; new connections over it get its tag again within a second,
// through netlink events (the periodic rescan is 60 s).
func TestTunnelRecreated(t *testing.T) {
	e := newEnv(t, "")
	e.startAgent()
	e.startTagServer("bpf")
	old := e.topo.Srv.Ifindex(t, "tun0")
	start := time.Now()
	e.topo.RecreateTunnel(t)
	now := e.topo.Srv.Ifindex(t, "tun0")
	if now == old {
		t.Fatalf("tun0 kept ifindex %d", old)
	}
	deadline := start.Add(time.Second)
	if deadline.Before(time.Now()) {
		deadline = time.Now() // the re-creation itself took longer: the first connection must be right
	}
	for _, fam := range families {
		for {
			c, err := e.connect(e.topo.LB, fam)
			if err != nil {
				t.Fatal(err)
			}
			c.conn.Close()
			if c.reply.Tag == "maglev" && c.reply.Ifindex == now && c.reply.Device == "tun0" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s over the re-created tunnel: %+v, want tag maglev on tun0 (ifindex %d, was %d)", fam, c.reply, now, old)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestAgentRestart: with keep_on_exit the program stays attached while the
// agent is down. Connections accepted before a restart, during it and after
// it are all attributed by BPF; a crashed agent (SIGKILL) is taken over the
// same way.
func TestAgentRestart(t *testing.T) {
	e := newEnv(t, "")
	agent := e.startAgent("--bpf.keep-on-exit")
	e.startTagServer("bpf")
	type held struct {
		ns  *topo.NS
		fam string
		dev string
		c   *client
	}
	var conns []*held
	open := func(ns *topo.NS, fam, dev string) {
		t.Helper()
		c, err := e.connect(ns, fam)
		if err != nil {
			t.Fatal(err)
		}
		wantFam := map[string]string{"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4"}[fam]
		if c.reply.Tag != expectedTag(dev, wantFam) || c.reply.Method != "cookie" {
			t.Errorf("%s %s: %+v, want tag %s by cookie", ns.Role(), fam, c.reply, expectedTag(dev, wantFam))
		}
		conns = append(conns, &held{ns, fam, dev, c})
	}

	open(e.topo.C1, "ipv4", "eth1") // before
	agent.stop(t, syscall.SIGTERM)
	if !strings.Contains(agent.out.String(), "left attached") {
		t.Errorf("agent did not report leaving the program attached:\n%s", agent.out.String())
	}
	open(e.topo.C2, "ipv6", "eth2") // while no agent runs
	agent = e.startAgent("--bpf.keep-on-exit")
	if !strings.Contains(agent.out.String(), "reused_pins=true") {
		t.Errorf("restarted agent did not take over the pins:\n%s", agent.out.String())
	}
	open(e.topo.LB, "mapped", "tun0") // after

	agent.stop(t, syscall.SIGKILL) // a crash: nothing is cleaned up
	open(e.topo.C4, "ipv6", "mv0")
	agent = e.startAgent()
	if !strings.Contains(agent.out.String(), "reused_pins=true") {
		t.Errorf("agent after a crash did not take over the pins:\n%s", agent.out.String())
	}
	open(e.topo.Client, "ipv4", "tun0")

	// Every connection, old and new, is still listed with its tag.
	byRemote := connRows(t, e)
	for _, h := range conns {
		r, ok := byRemote[normalize(h.c.conn.LocalAddr().String())]
		if !ok || r.Device != h.dev || r.SourceTag != h.c.reply.Tag {
			t.Errorf("conns for %s %s: %+v (listed %v), want device %s tag %s", h.ns.Role(), h.fam, r, ok, h.dev, h.c.reply.Tag)
		}
	}

	// A plain stop (no keep_on_exit) detaches: the pins are gone.
	agent.stop(t, syscall.SIGTERM)
	if _, err := e.ipngStats("conns", "--bpf.pin-dir", e.pinDir); err == nil {
		t.Error("conns still finds pins after the agent stopped without keep_on_exit")
	}
}

// TestAgentReloadWhileStarting: a SIGHUP that arrives while the agent is
// still setting up (loading the program, systemctl reload right after
// start) must not kill it.
func TestAgentReloadWhileStarting(t *testing.T) {
	e := newEnv(t, "")
	p := e.start("agent", e.topo.Srv.Exec(context.Background(), agentBin, "agent", "--config", e.cfgPath,
		"--bpf.cgroup", e.cg.Path, "--bpf.pin-dir", e.pinDir), false)
	testenv.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.out.String(), "starting ipng-stats agent") }, "agent starting")
	p.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-p.done:
			t.Fatalf("agent died on an early SIGHUP: %v\n%s", p.err, p.out.String())
		default:
		}
		return strings.Contains(p.out.String(), `msg="agent running"`)
	}, "agent running")
	p.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 5*time.Second, func() bool { return strings.Contains(p.out.String(), "configuration reloaded") }, "reload")
}
