package tests

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/status"
)

// terminal is a tmux server of the test's own (socket -S) with one
// session running a command inside a namespace, read with capture-pane.
type terminal struct {
	t      *testing.T
	socket string
}

func newTerminal(t *testing.T, ns *topo.NS, width, height int, args ...string) *terminal {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		testenv.Skip(t, "needs tmux (make deps)")
	}
	// A socket in the test's directory: removed with it, whatever happens.
	tm := &terminal{t: t, socket: filepath.Join(t.TempDir(), "tmux")}
	cmd := append([]string{"-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", fmt.Sprint(width), "-y", fmt.Sprint(height),
		"--", "nsenter", "--net=" + ns.Path, "--"}, args...)
	if _, err := tm.tmux(cmd...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tm.tmux("kill-server") })
	return tm
}

func (tm *terminal) tmux(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tmux", append([]string{"-S", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("tmux %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// screen is the pane's text; with escapes, its colours too.
func (tm *terminal) screen(escapes bool) string {
	args := []string{"capture-pane", "-p", "-t", "top"}
	if escapes {
		args = append(args, "-e")
	}
	out, err := tm.tmux(args...)
	if err != nil {
		tm.t.Fatal(err)
	}
	return out
}

func (tm *terminal) keys(keys ...string) {
	if _, err := tm.tmux(append([]string{"send-keys", "-t", "top"}, keys...)...); err != nil {
		tm.t.Fatal(err)
	}
}

// waitScreen polls the pane until cond holds for its text.
func (tm *terminal) waitScreen(what string, cond func(screen string) bool) string {
	tm.t.Helper()
	var s string
	testenv.EventuallyNil(tm.t, 30*time.Second, what, func() error {
		if s = tm.screen(false); !cond(s) {
			return fmt.Errorf("screen:\n%s", s)
		}
		return nil
	})
	return s
}

// topRow matches a table row: tag, VIP, REQ/S, 5M, 15M, REQUESTS.
var topRow = regexp.MustCompile(`(?m)^(\S+)\s+(\S+)\s+([0-9.]+)\s+[0-9.]+\s+[0-9.]+\s+([0-9]+)\s`)

// rows returns "tag vip requests" per row, in screen order, and the REQ/S
// shown per "tag vip".
func rows(screen string) (order []string, rates map[string]string) {
	rates = map[string]string{}
	for _, m := range topRow.FindAllStringSubmatch(screen, -1) {
		order = append(order, m[1]+" "+m[2]+" "+m[4])
		rates[m[1]+" "+m[2]] = m[3]
	}
	return order, rates
}

// TestTopInTerminal: `ipng-stats top` in a real pseudo-terminal (tmux)
// against an agent carrying traffic over two tagged interfaces: rows and
// counts match what was sent and the rates what the agent computes; sort,
// filter and per-tag keys work; --once prints the same rows; a stopped agent
// gives a clear message in the UI and an error from --once, not a crash.
func TestTopInTerminal(t *testing.T) {
	e := newLiveEnv(t)
	vip := e.traffic(1)

	tm := newTerminal(t, e.topo.Srv, 160, 24, agentBin, "top", "--url", e.base)
	// Rates: the 1-minute averages move every 5 s; wait until both tags
	// have one and the screen shows exactly what the agent's JSON says.
	var screen string
	tm.waitScreen("rates of both tags as the agent computes them", func(s string) bool {
		screen = s
		_, shown := rows(s)
		d, err := e.stats()
		if err != nil {
			return false
		}
		want := map[string]string{}
		for _, s := range d.Series {
			if s.VIP == vip {
				want[s.SourceTag+" "+s.VIP] = status.FormatRate(s.Rate.M1)
			}
		}
		return len(want) == 2 && want["tag1 "+vip] != "0.00" && want["tag2-v4 "+vip] != "0.00" &&
			shown["tag1 "+vip] == want["tag1 "+vip] && shown["tag2-v4 "+vip] == want["tag2-v4 "+vip]
	})
	for _, want := range []string{"BPF attached", "attribution bpf (bpf)", "series", "sort rate · per VIP"} {
		if !strings.Contains(screen, want) {
			t.Errorf("screen lacks %q:\n%s", want, screen)
		}
	}
	order := func(s string) string {
		o, _ := rows(s)
		var own []string
		for _, r := range o {
			if strings.Contains(r, " "+vip+" ") {
				own = append(own, r)
			}
		}
		return strings.Join(own, ", ")
	}
	if got := order(screen); got != "tag1 "+vip+" 6, tag2-v4 "+vip+" 3" {
		t.Errorf("rows by rate: %s\n%s", got, screen)
	}
	saveArtifact(t, "top.txt", []byte(screen))
	screenshotTerminal(t, e.topo.Srv, strings.TrimRight(tm.screen(true), "\n"))

	// e: by 5xx share, tag2-v4 (1 of 3) first; n: by requests, tag1 first.
	tm.keys("e")
	tm.waitScreen("sort by 5xx", func(s string) bool {
		return strings.Contains(s, "sort 5xx") && order(s) == "tag2-v4 "+vip+" 3, tag1 "+vip+" 6"
	})
	tm.keys("n")
	tm.waitScreen("sort by requests", func(s string) bool {
		return strings.Contains(s, "sort requests") && order(s) == "tag1 "+vip+" 6, tag2-v4 "+vip+" 3"
	})
	// Filter: / tag2 enter.
	tm.keys("/", "t", "a", "g", "2", "Enter")
	tm.waitScreen("filter tag2", func(s string) bool {
		o, _ := rows(s)
		return strings.Contains(s, `filter "tag2"`) && strings.Join(o, ", ") == "tag2-v4 "+vip+" 3"
	})
	// Escape on its own: followed at once by v, a terminal sends alt+v.
	tm.keys("Escape")
	tm.waitScreen("filter cleared", func(s string) bool { return !strings.Contains(s, `filter "tag2"`) })
	tm.keys("v")
	tm.waitScreen("per tag", func(s string) bool {
		return strings.Contains(s, "per tag") && regexp.MustCompile(`(?m)^tag1\s+1 VIP\s`).MatchString(s) &&
			regexp.MustCompile(`(?m)^tag2-v4\s+1 VIP\s`).MatchString(s)
	})

	// --once: the same rows as plain text.
	once, err := e.ipngStats("top", "--once", "--url", e.base, "--sort", "tag", "--filter", "tag")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := rows(once); strings.Join(got, ", ") != "tag1 "+vip+" 6, tag2-v4 "+vip+" 3" {
		t.Errorf("--once rows %v:\n%s", got, once)
	}
	if strings.Contains(once, "\x1b[") {
		t.Errorf("--once printed escape sequences:\n%q", once)
	}

	// The agent stops: a clear message, the last data, and top keeps running.
	e.agent.stop(t, syscall.SIGTERM)
	tm.waitScreen("connection lost", func(s string) bool {
		return strings.Contains(s, "connection lost") && strings.Contains(s, "connection refused") && strings.Contains(s, "tag1")
	})
	if _, err := e.ipngStats("top", "--once", "--url", e.base); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("--once against a stopped agent: %v", err)
	}
	tm.keys("q")
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := tm.tmux("has-session", "-t", "top")
		return err != nil
	}, "top to quit on q")
}

// screenshotTerminal renders a capture with escapes in chromium and saves
// the picture as top.png (the one in the docs).
func screenshotTerminal(t *testing.T, ns *topo.NS, capture string) {
	t.Helper()
	b := newBrowser(t, ns)
	b.run(t, chromedp.EmulateViewport(1400, 400), chromedp.Navigate("about:blank"), writeDocument(ansiHTML(capture)), chromedp.WaitVisible(chromedp.CSS("pre")))
	saveArtifact(t, "top.png", get(t, b, chromedp.Screenshot(chromedp.CSS("pre"))))
}
