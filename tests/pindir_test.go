package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/loader"
)

// TestPinDirRemovedWhileRunning: `rm -r` of the pin directory under a
// running agent is noticed and repaired: the pins come back, `conns` lists
// the connections stamped before and after, and what SIGTERM logs is true.
// Where the directory cannot be made again the agent stops with an error
// that says so (its supervisor restarts it).
func TestPinDirRemovedWhileRunning(t *testing.T) {
	t.Run("repinned", func(t *testing.T) {
		e := newEnv(t, "")
		agent := e.startAgent()
		e.startTagServer("bpf")
		before, err := e.connect(e.topo.C1, "ipv4")
		if err != nil {
			t.Fatal(err)
		}
		removePins(t, e.pinDir, nil)
		testenv.Eventually(t, 20*time.Second, func() bool {
			return strings.Contains(agent.out.String(), "pinned again") && exists(filepath.Join(e.pinDir, loader.PinLink))
		}, "pins restored")

		after, err := e.connect(e.topo.C2, "ipv6")
		if err != nil {
			t.Fatal(err)
		}
		rows := connRows(t, e)
		for _, c := range []struct {
			c        *client
			dev, tag string
		}{{before, "eth1", "tag1"}, {after, "eth2", "tag2-v6"}} {
			r, ok := rows[normalize(c.c.conn.LocalAddr().String())]
			if !ok || r.Device != c.dev || r.SourceTag != c.tag {
				t.Errorf("conns for %s: %+v (listed %v), want %s %s", c.c.conn.LocalAddr(), r, ok, c.dev, c.tag)
			}
		}
		agent.stop(t, syscall.SIGTERM)
		if out := agent.out.String(); !strings.Contains(out, "sock_ops program detached") || strings.Contains(out, "left attached") {
			t.Errorf("SIGTERM:\n%s", out)
		}
		if exists(e.pinDir) {
			t.Error("pin directory left after SIGTERM without keep_on_exit")
		}
	})
	t.Run("keep-on-exit", func(t *testing.T) {
		// Removed right before SIGTERM: whether the watcher or the stop
		// restores them, the program is left attached, as the log says.
		e := newEnv(t, "")
		agent := e.startAgent("--bpf.keep-on-exit")
		removePins(t, e.pinDir, nil)
		agent.stop(t, syscall.SIGTERM)
		if out := agent.out.String(); !strings.Contains(out, "left attached") || !strings.Contains(out, "pinned again") {
			t.Errorf("SIGTERM after the pins were removed:\n%s", out)
		}
		if !exists(filepath.Join(e.pinDir, loader.PinLink)) {
			t.Fatal("the agent said it left the program attached, but no link is pinned")
		}
		agent = e.startAgent()
		if !strings.Contains(agent.out.String(), "reused_pins=true") {
			t.Errorf("the next agent did not take over the pins:\n%s", agent.out.String())
		}
	})
	t.Run("cannot-repin", func(t *testing.T) {
		e := newEnv(t, "")
		agent := e.startAgent()
		// A symlink to another filesystem where the directory was: the
		// agent cannot pin there.
		away := t.TempDir()
		removePins(t, e.pinDir, func() error { return os.Symlink(away, e.pinDir) })
		t.Cleanup(func() { os.Remove(e.pinDir) })
		select {
		case <-agent.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("the agent runs on unpinned:\n%s", agent.out.String())
		}
		out := agent.out.String()
		if agent.err == nil || !strings.Contains(out, "cannot be restored") || !strings.Contains(out, "not on a bpf filesystem") {
			t.Errorf("exit %v:\n%s", agent.err, out)
		}
	})
}

// removePins removes the pin directory as `rm -r` does, then calls then
// (when not nil). The agent may pin again in between: both are retried
// (bounded) until they succeed together.
func removePins(t *testing.T, dir string, then func() error) {
	t.Helper()
	if !exists(filepath.Join(dir, loader.PinLink)) {
		t.Fatalf("nothing pinned in %s", dir)
	}
	var err error
	for range 100 {
		if err = os.RemoveAll(dir); err == nil && then != nil {
			err = then()
		}
		if err == nil {
			return
		}
	}
	t.Fatalf("removing %s: %v", dir, err)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// connRows runs `ipng-stats conns -o json` and returns its rows by remote address.
func connRows(t *testing.T, e *env) map[string]connRow {
	t.Helper()
	m := map[string]connRow{}
	for _, r := range e.conns(t, e.cfgPath, e.pinDir, nil) {
		m[r.Remote] = r
	}
	return m
}

// conns runs `ipng-stats conns -o json` on the config and pins given,
// through wrap (nil: as root; asUser: as another user without
// capabilities). It returns the rows.
func (e *env) conns(t *testing.T, cfg, pins string, wrap []string) []connRow {
	t.Helper()
	out, err := e.ipngStats(wrapped(wrap, agentBin, []string{"conns", "--config", cfg, "--bpf.pin-dir", pins, "-o", "json"})...)
	if err != nil {
		t.Fatalf("conns (through %v): %v\n%s", wrap, err, out)
	}
	var rows []connRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("conns output: %v\n%s", err, out)
	}
	return rows
}
