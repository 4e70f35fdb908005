package tests

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

var updateDocs = flag.Bool("update-docs", false, "write the live views' screenshots into docs/images")

// artifactDir is where the live-view tests leave their screenshots: the
// directory named by IPNG_STATS_ARTIFACTS, or a fixed one under the
// temporary directory (logged by each test).
func artifactDir(t *testing.T) string {
	dir := os.Getenv("IPNG_STATS_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "ipng-stats-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// saveArtifact writes a screenshot or capture as a test artifact and, with
// -update-docs, a screenshot (.png) into docs/images.
func saveArtifact(t *testing.T, name string, data []byte) {
	t.Helper()
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifact: %s", path)
	if *updateDocs && filepath.Ext(name) == ".png" {
		if err := os.WriteFile(filepath.Join("..", "docs", "images", name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// browser is a headless Debian chromium started inside ns, driven over the
// DevTools protocol (pipe transport), with every request and console error
// of its pages recorded.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	requests []string
	errors   []string
}

func newBrowser(t *testing.T, ns *topo.NS) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Skip(t, "needs Debian's chromium (make deps)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-default-browser-check", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800),
		// Run it inside ns: nsenter keeps the DevTools pipe (fds 3 and 4).
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{"nsenter", "--net=" + ns.Path, "--", bin}, cmd.Args[1:]...)
			cmd.Path, _ = exec.LookPath("nsenter")
		}),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	b := &browser{ctx: ctx}
	err = chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				b.errors = append(b.errors, fmt.Sprintf("console.%s %v", ev.Type, ev.Args))
			}
		case *runtime.EventExceptionThrown:
			b.errors = append(b.errors, fmt.Sprintf("exception: %s %s", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL))
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				b.errors = append(b.errors, fmt.Sprintf("log %s: %s %s", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		}
	})
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	b.run(t, call(network.Enable, network.EnableParams{}), call(cdplog.Enable, cdp.Empty{}), call(runtime.Enable, cdp.Empty{}))
	return b
}

// call is an action running one protocol command.
func call[P, R any](cmd cdp.Command[P, R], params P) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cmd, params)
		return err
	})
}

func (b *browser) run(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// get runs an action that returns a value.
func get[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// requestCount is the number of requests whose URL contains s.
func (b *browser) requestCount(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, u := range b.requests {
		if strings.Contains(u, s) {
			n++
		}
	}
	return n
}

// check fails the test on a console error or a request to anything but base.
func (b *browser) check(t *testing.T, base string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errors {
		t.Errorf("browser console: %s", e)
	}
	if len(b.requests) == 0 {
		t.Error("no request recorded")
	}
	for _, u := range b.requests {
		if !strings.HasPrefix(u, base+"/") {
			t.Errorf("request to %s, not to the agent (%s)", u, base)
		}
	}
}

// rowsJS returns the table's rows of the VIP 192.0.2.10 as "tag vip
// requests" strings.
const rowsJS = `Array.from(document.querySelectorAll('#traffic tbody tr[data-vip="192.0.2.10"]')).map(function (r) {
  return r.getAttribute('data-tag') + ' ' + r.getAttribute('data-vip') + ' ' + r.querySelector('td.req').textContent;
}).join('\n')`

// a11yJS lists what breaks the page's accessibility basics: text below a
// 4.5:1 contrast ratio (WCAG AA), header cells without scope, a table
// without caption or header, a form field without label.
const a11yJS = `(function () {
  function rgb(s) { var m = s.match(/[0-9.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; }
  function lum(c) {
    var f = function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  }
  function background(el) {
    for (; el; el = el.parentElement) {
      var c = rgb(getComputedStyle(el).backgroundColor);
      if (c.a > 0) { return c; }
    }
    return {r: 255, g: 255, b: 255, a: 1};
  }
  var bad = [];
  document.querySelectorAll('h1, h2, a, p, label, button, caption, th, td, dt, dd, abbr, span, input').forEach(function (el) {
    if (!el.textContent.trim() && el.tagName !== 'INPUT') { return; }
    var style = getComputedStyle(el);
    var fg = rgb(style.color), bg = background(el), l1 = lum(fg), l2 = lum(bg);
    var ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05) * (style.opacity < 1 ? 0 : 1);
    if (ratio < 4.5) { bad.push('contrast ' + ratio.toFixed(2) + ' of ' + el.tagName + ' "' + el.textContent.trim().slice(0, 20) + '"'); }
  });
  document.querySelectorAll('thead th').forEach(function (th) { if (th.getAttribute('scope') !== 'col') { bad.push('th without scope: ' + th.textContent); } });
  document.querySelectorAll('tbody th').forEach(function (th) { if (th.getAttribute('scope') !== 'row') { bad.push('row th without scope: ' + th.textContent); } });
  document.querySelectorAll('table').forEach(function (t) { if (!t.tHead) { bad.push('table without thead: ' + t.id); } });
  if (!document.querySelector('#traffic caption')) { bad.push('traffic table without caption'); }
  document.querySelectorAll('input').forEach(function (i) { if (!document.querySelector('label[for="' + i.id + '"]')) { bad.push('input without label: ' + i.id); } });
  if (!document.documentElement.lang) { bad.push('no lang'); }
  return bad.join('\n');
})()`

// waitRows polls the page (without reloading it) until its rows are want.
func (b *browser) waitRows(t *testing.T, want string) {
	t.Helper()
	testenv.EventuallyNil(t, 30*time.Second, "page rows", func() error {
		if got := get(t, b, chromedp.Evaluate[string](rowsJS)); got != want {
			return fmt.Errorf("\n%s\nwant:\n%s", got, want)
		}
		return nil
	})
}

// TestStatusPageInBrowser: the status page of an agent carrying traffic
// over two tagged interfaces, in headless chromium running in the agent's
// namespace: both tags with the counts sent, live updates without reload,
// the filter, pausing while hidden, a phone-sized layout without page-wide
// scrolling, no console error, no request to anything but the agent; and
// the same page with scripting disabled.
func TestStatusPageInBrowser(t *testing.T) {
	e := newLiveEnv(t)
	vip := e.traffic(0)

	b := newBrowser(t, e.topo.Srv)
	page := e.base + "/status/"
	live := chromedp.Poll[chromedp.Void](`document.getElementById('state').textContent.indexOf('Live') >= 0`,
		chromedp.WithPollingTimeout(20*time.Second))
	// The script has taken over once the state line says "Live".
	b.run(t, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#traffic")), live)
	b.waitRows(t, "tag1 "+vip+" 6\ntag2-v4 "+vip+" 3")
	health := get(t, b, chromedp.Text(chromedp.CSS("#health")))
	for _, want := range []string{"BPF", "attached", "attribution", "bpf (bpf)", "series", "uptime"} {
		if !strings.Contains(health, want) {
			t.Errorf("health header %q lacks %q", health, want)
		}
	}
	bindings := get(t, b, chromedp.Text(chromedp.CSS("#bindings tbody")))
	for _, dev := range []string{"eth1", "eth2", "tun0"} {
		if want := fmt.Sprint(e.topo.Srv.Ifindex(t, dev)); !strings.Contains(bindings, dev) || !strings.Contains(bindings, want) {
			t.Errorf("bindings %q lack %s with ifindex %s", bindings, dev, want)
		}
	}

	// More traffic shows up without a reload.
	get(t, b, chromedp.Evaluate[int](`window.ipngMarker = 42`))
	e.send(e.topo.C2, 500, 4)
	b.waitRows(t, "tag1 "+vip+" 6\ntag2-v4 "+vip+" 7")
	if marker := get(t, b, chromedp.Evaluate[int](`window.ipngMarker || 0`)); marker != 42 {
		t.Error("the page was reloaded")
	}
	// 3 of 7 are 2xx, 4 of 7 are 5xx.
	shares := get(t, b, chromedp.Evaluate[string](`Array.from(document.querySelectorAll('#traffic tr[data-tag="tag2-v4"] td.share')).map(function (c) { return c.textContent; }).join(' ')`))
	if shares != "42.9% – – 57.1% –" {
		t.Errorf("tag2-v4 shares 2xx 3xx 4xx 5xx other = %q", shares)
	}

	// Contrast and table semantics, in the light and the dark colour scheme.
	for _, scheme := range []string{"light", "dark"} {
		b.run(t, call(emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}))
		if bad := get(t, b, chromedp.Evaluate[string](a11yJS)); bad != "" {
			t.Errorf("accessibility (%s):\n%s", scheme, bad)
		}
	}
	b.run(t, call(emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}))
	// The check itself sees a pale text and a header without scope (set
	// through the CSSOM: the page's CSP refuses inline style attributes).
	bad := get(t, b, chromedp.Evaluate[string](`var p = document.createElement('p'); p.textContent = 'pale';
p.style.color = '#ddd'; document.querySelector('main').appendChild(p);
document.querySelector('main').insertAdjacentHTML('beforeend', '<table><thead><tr><th>x</th></tr></thead></table>'); `+a11yJS))
	if !strings.Contains(bad, `contrast 1.`) || !strings.Contains(bad, "th without scope: x") {
		t.Errorf("the accessibility check misses planted faults: %q", bad)
	}

	// The filter, live and kept in the URL.
	b.run(t, chromedp.SendKeys(chromedp.CSS("#q"), "tag2"))
	b.waitRows(t, "tag2-v4 "+vip+" 7")
	if loc := get(t, b, chromedp.Location()); !strings.HasSuffix(loc, "?q=tag2") {
		t.Errorf("location %s does not keep the filter", loc)
	}

	// Hidden tab: no polling; visible again: polling resumes.
	setHidden := func(hidden bool) {
		get(t, b, chromedp.Evaluate[bool](fmt.Sprintf(`Object.defineProperty(document, 'hidden', {value: %t, configurable: true});
document.dispatchEvent(new Event('visibilitychange')); true`, hidden)))
	}
	setHidden(true)
	b.run(t, chromedp.Poll[chromedp.Void](`document.getElementById('state').textContent.indexOf('Paused') >= 0`,
		chromedp.WithPollingTimeout(10*time.Second)))
	polls := b.requestCount("format=json")
	time.Sleep(5 * time.Second) // 2.5 poll intervals: none may happen
	if n := b.requestCount("format=json"); n != polls {
		t.Errorf("%d polls while hidden", n-polls)
	}
	setHidden(false)
	testenv.Eventually(t, 10*time.Second, func() bool { return b.requestCount("format=json") > polls }, "polling after the tab is visible again")

	// The screenshot in the docs: unfiltered, desktop width.
	b.run(t, chromedp.Navigate(page), live)
	saveArtifact(t, "status-page.png", get(t, b, chromedp.FullScreenshot(100)))

	// A phone: the page itself does not scroll sideways (the table does, inside its region).
	b.run(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(3), chromedp.EmulateMobile), chromedp.Navigate(page),
		chromedp.WaitVisible(chromedp.CSS("#traffic")))
	if get(t, b, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`)) {
		t.Error("on a 390 px wide screen the page scrolls sideways")
	}
	b.check(t, e.base)

	t.Run("scripting disabled", func(t *testing.T) {
		nb := newBrowser(t, e.topo.Srv)
		nb.run(t, call(emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}),
			chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#traffic")))
		html := get(t, nb, chromedp.OuterHTML(chromedp.CSS("#traffic tbody")))
		for _, want := range []string{`data-tag="tag1"`, `<td class="num req">6</td>`, `data-tag="tag2-v4"`, `<td class="num req">7</td>`} {
			if !strings.Contains(html, want) {
				t.Errorf("server-rendered table lacks %s:\n%s", want, html)
			}
		}
		if state := get(t, nb, chromedp.Text(chromedp.CSS("#status-line"))); strings.Contains(state, "Live") || !strings.Contains(state, "Updated") {
			t.Errorf("state %q: the script ran", state)
		}
		if nb.requestCount("format=json") != 0 {
			t.Error("the page polled with scripting disabled")
		}
		nb.check(t, e.base)
	})
}
