package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/nginxlog"
)

// soakDevice is the bound interface the fault schedule deletes and
// re-creates (a veth pair in srv: deleting eth1 or eth2 would cut the
// clients off; deleting it deletes its veth peer).
const soakDevice = "soak0"

// soakBindings is bindingsYAML with soakDevice bound, and tun0's tag (no
// traffic) alt or not: every SIGHUP of the schedule flips it.
func soakBindings(alt bool) string {
	b := bindingsYAML + "    - device: " + soakDevice + "\n      tag: soak\n"
	if alt {
		b = strings.Replace(b, "tag: maglev\n", "tag: maglev-b\n", 1)
	}
	return b
}

// procSample is what /proc says about a process, plus its go_goroutines.
type procSample struct{ fds, threads, rssKB, goroutines int }

func sampleProc(pid int) procSample {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	s := procSample{fds: len(fds)}
	for line := range strings.SplitSeq(string(st), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "Threads":
			s.threads = n
		case "VmRSS":
			s.rssKB = n
		}
	}
	return s
}

// grew reports whether b is more than a plus the soak's slack.
func (a procSample) grew(b procSample) bool {
	return b.fds > a.fds+16 || b.threads > a.threads+8 || b.rssKB > a.rssKB*3/2+16<<10 || b.goroutines > a.goroutines+50
}

func (a procSample) String() string {
	return fmt.Sprintf("fds %d, threads %d, RSS %d kB, goroutines %d", a.fds, a.threads, a.rssKB, a.goroutines)
}

// TestSoakFaults: steady traffic through nginx (the agent's nginx ingest)
// and through an `ipng-stats proxy` process (BPF attribution from the
// agent's pins), from eth1 (IPv4) and eth2 (IPv6), kept-alive and new
// connections, while a fault schedule runs in a loop:
//
//   - SIGHUP to the agent and the proxy every step (each waited for in the
//     log), tun0's binding changing every time;
//   - the bound interface soak0 deleted and re-created;
//   - `nginx -s reload`;
//   - the access log renamed and `nginx -s reopen` (logrotate);
//   - the agent SIGKILLed and restarted on its pins.
//
// At the end: no client request failed (nginx or proxy); the proxy counted
// every proxied request exactly once under its tag; the agents counted
// every nginx request exactly once under its tag, summed over their
// incarnations. The agent is SIGKILLed in the middle of the nginx traffic
// (nothing paused); a killed agent counted for good the lines it freed in
// the spool (what no scrape after its death can show), found from a
// shadow access log nobody reads; what it left in the spool, and what
// nginx appends while no agent runs, the next agent must count. Each
// killed agent's last scrape must not exceed what it freed (a scrape sees
// only freed lines, else the next agent would count them again). The proxy, a separate process,
// keeps serving while the agent is dead. The proxy's and the agent's fds,
// threads, RSS and goroutines do not grow; the sock_ops program's stamped
// − closed (live stamped sockets) returns to a few once the clients are
// gone, and no map was full.
func TestSoakFaults(t *testing.T) {
	dur := soakDuration(t)
	// The spool unbuffered, then a shadow log nobody reads: nginx writes
	// each line to the spool before it writes it to the shadow (the same
	// worker, in the order of the directives), so every line in the shadow
	// is in the spool, freed or not (see handover).
	n := setupNginxEnv(t, 2, "access_log {log} "+nginxlog.LogFormatName+";\n  access_log {dir}/shadow.log "+nginxlog.LogFormatName+";")
	shadow := &shadowLog{path: filepath.Join(n.dir, "shadow.log"), pending: map[string]int{}}
	lineKey := func(l string) (string, error) {
		var m map[string]string
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			return "", fmt.Errorf("line %q: %w", l, err)
		}
		code, err := strconv.Atoi(m["status"])
		if err != nil {
			return "", fmt.Errorf("line %q: status: %w", l, err)
		}
		dev, fam := "eth1", "ipv4" // the clients: eth1 over IPv4, eth2 over IPv6
		if strings.Contains(m["server_addr"], ":") {
			dev, fam = "eth2", "ipv6"
		}
		return expectedTag(dev, fam) + " " + n.vipLabel(fam) + " " + codeClass(code), nil
	}
	n.startNginx()
	a := &ingestAgent{n: n, cfg: filepath.Join(n.dir, "agent-nginx.yml"), pins: topo.PinDir(t)}
	addSoakDevice(t, n.topo.Srv)
	a.writeConfig(soakBindings(false))
	a.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- output of the last agent:\n%s", a.proc.out.String())
		}
	})

	// The proxy: its own process in the test cgroup, reading the agent's
	// pins; the e2e proxy section with a 10 s header timeout (see
	// TestSoakReloads).
	ports := n.distinctPorts(2, n.port, n.dsPort, n.statePort, 9113, 9114)
	proxyPort, proxyWeb := ports[0], ports[1]
	backend := proxyBackend(t, n.topo, "a")
	proxyCfg := filepath.Join(n.dir, "proxy.yml")
	writeProxy := func(alt bool) {
		sec := fmt.Sprintf("proxy:\n  listeners:\n    - address: \":%d\"\n      upstream: web\n  upstreams:\n    - name: web\n      servers: [%q]\n  timeouts:\n    read_header: 10s\n", proxyPort, backend)
		if err := os.WriteFile(proxyCfg, []byte(soakBindings(alt)+sec), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeProxy(false)
	px := n.start("proxy", n.topo.Srv.Exec(context.Background(), agentBin, "proxy", "--config", proxyCfg,
		"--attribution.mode", "bpf", "--bpf.pin-dir", a.pins, "--web.listen-address", fmt.Sprintf("127.0.0.1:%d", proxyWeb)), true)
	px.awaitRunning(t, `msg="proxy command running"`)
	scrape := func(port int, path string) ([]byte, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: n.topo.Srv.Dial, DisableKeepAlives: true}}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return io.ReadAll(resp.Body)
	}
	doc := func(port int) (*exporter.Document, error) {
		b, err := scrape(port, exporter.StatszPath+"?format=json")
		if err != nil {
			return nil, err
		}
		var d exporter.Document
		return &d, json.Unmarshal(b, &d)
	}
	vips := []string{n.topo.VIP4.String(), n.topo.VIP6.String()}
	proxyCounts := func() (map[string]uint64, error) {
		d, err := doc(proxyWeb)
		if err != nil {
			return nil, err
		}
		return fixtures.DocRequests(d, vips...), nil
	}
	sample := func(pid, port int) procSample {
		s := sampleProc(pid)
		b, _ := scrape(port, "/metrics")
		s.goroutines = int(testenv.Samples(string(b), "go_goroutines")[""])
		return s
	}
	agentPort := 9114 // ingestAgentAddr

	// Clients, without pause: the agent is killed in the middle of their
	// traffic.
	var (
		mu         sync.Mutex
		nginxSent  = map[string]uint64{}
		proxySent  = map[string]uint64{}
		failures   []string
		nginxDone  atomic.Uint64
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		cleanupFns []func()
	)
	fail := func(what string, err error) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf("%s at %s: %v", what, time.Now().Format(time.StampMilli), err))
		mu.Unlock()
	}
	type src struct {
		ns   *topo.NS
		fam  string
		dev  string
		keep bool
	}
	srcs := []src{{n.topo.C1, "ipv4", "eth1", true}, {n.topo.C1, "ipv4", "eth1", false}, {n.topo.C2, "ipv6", "eth2", true}, {n.topo.C2, "ipv6", "eth2", false}}
	for _, s := range srcs {
		vip := n.vipLabel(s.fam)
		tag := expectedTag(s.dev, s.fam)
		// nginx
		nc := n.clientKeepAlive(s.ns, s.fam, n.port, s.keep)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code := nginxCodes[i%len(nginxCodes)]
				err := nc.get(code)
				if err == nil {
					mu.Lock()
					nginxSent[tag+" "+vip+" "+codeClass(code)]++
					mu.Unlock()
					nginxDone.Add(1)
				}
				if err != nil {
					fail(fmt.Sprintf("nginx %s keep-alive %v", s.dev, s.keep), err)
				}
				time.Sleep(2 * time.Millisecond) // pacing, not a synchronisation
			}
		}()
		// proxy
		tr := &http.Transport{DialContext: s.ns.Dial, DisableKeepAlives: !s.keep}
		cleanupFns = append(cleanupFns, tr.CloseIdleConnections)
		hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
		url := fmt.Sprintf("http://%s/status/200", net.JoinHostPort(vip, strconv.Itoa(proxyPort)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := getStatus(hc, url, 200); err != nil {
					fail(fmt.Sprintf("proxy %s keep-alive %v", s.dev, s.keep), err)
				} else {
					mu.Lock()
					proxySent[tag+" "+vip+" 2xx"]++
					mu.Unlock()
				}
				time.Sleep(2 * time.Millisecond) // pacing, not a synchronisation
			}
		}()
	}

	// The fault schedule.
	reloaded := func(p *proc) int { return strings.Count(p.out.String(), `msg="configuration reloaded"`) }
	var (
		carried     = map[string]uint64{} // nginx lines counted and freed by killed agents
		unscraped   uint64                // of those, counted after the incarnation's last scrape
		leftInSpool int                   // lines a killed agent left in the spool, for the next one
		kills       int
		sighups     int
		ifaces      int
		nreloads    int
		reopens     int
		alt         bool
		pxFirst     procSample
		agFirst     procSample
	)
	testenv.Eventually(t, 20*time.Second, func() bool { return nginxDone.Load() >= 200 }, "traffic under way")
	pxFirst, agFirst = sample(px.cmd.Process.Pid, proxyWeb), sample(a.proc.cmd.Process.Pid, agentPort)
	deadline := time.Now().Add(dur)
	for step := 0; time.Now().Before(deadline); step++ {
		// SIGHUP both, bindings changing.
		alt = !alt
		ab, pb := reloaded(a.proc), reloaded(px)
		a.writeConfig(soakBindings(alt))
		writeProxy(alt)
		a.proc.cmd.Process.Signal(syscall.SIGHUP)
		px.cmd.Process.Signal(syscall.SIGHUP)
		testenv.Eventually(t, 20*time.Second, func() bool { return reloaded(a.proc) > ab && reloaded(px) > pb }, "SIGHUP %d", sighups+1)
		sighups++

		switch step % 4 {
		case 0:
			n.topo.Srv.Run(t, "link", "del", soakDevice)
			addSoakDevice(t, n.topo.Srv)
			ifaces++
		case 1:
			n.signalNginx("reload")
			nreloads++
		case 2:
			if err := os.Rename(n.logFile, n.logFile+".1"); err != nil {
				t.Fatal(err)
			}
			n.signalNginx("reopen")
			reopens++
		case 3:
			// SIGKILL under traffic. The last scrape of this incarnation
			// first: what Prometheus would have seen of it.
			scraped, err := a.requests()
			if err != nil {
				t.Fatalf("agent %d: last scrape before its SIGKILL: %v", kills+1, err)
			}
			a.proc.stop(t, syscall.SIGKILL)
			kills++
			killedAt := nginxDone.Load()
			// What it freed is what it counted for good; what it left
			// in the spool the next agent must count.
			h, err := shadow.handover(lineKey, n.logFile, n.logFile+".1")
			if err != nil {
				t.Fatalf("agent %d: %v", kills, err)
			}
			for k, v := range scraped {
				if v > h.freed[k] {
					t.Errorf("agent %d: its last scrape showed %d requests %s, but it freed only %d lines of them: a scrape saw lines not freed (counted again by the next agent)", kills, v, k, h.freed[k])
				}
				unscraped += h.freed[k] - min(v, h.freed[k])
			}
			addCounts(carried, h.freed)
			leftInSpool += h.left
			// Requests while no agent runs: nginx logs them to the spool.
			testenv.Eventually(t, 20*time.Second, func() bool { return nginxDone.Load() >= killedAt+100 }, "nginx requests while the agent is dead")
			a.start()
		}
		time.Sleep(200 * time.Millisecond) // pacing: a step every few hundred ms, not a synchronisation
	}
	close(stop)
	wg.Wait()
	for _, f := range cleanupFns {
		f()
	}
	pxLast, agLast := sample(px.cmd.Process.Pid, proxyWeb), sample(a.proc.cmd.Process.Pid, agentPort)

	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d client requests failed:\n%s", len(failures), strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
	var nTotal, pTotal uint64
	for _, v := range nginxSent {
		nTotal += v
	}
	for _, v := range proxySent {
		pTotal += v
	}
	if kills == 0 || pTotal == 0 || nTotal == 0 {
		t.Fatalf("no soak: %d nginx and %d proxy requests, %d agent kills", nTotal, pTotal, kills)
	}
	fixtures.WaitCounts(t, 30*time.Second, "proxy: requests per (tag, vip, code)", proxyCounts, proxySent)
	last := maps.Clone(nginxSent)
	for k, v := range carried {
		last[k] -= v
		if last[k] == 0 {
			delete(last, k)
		}
	}
	a.waitRequests("the last agent", last)
	// Every request was logged once, and what the last agent counted is
	// what no killed agent freed.
	lastLines := map[string]uint64{}
	testenv.EventuallyNil(t, 20*time.Second, "nginx logged each request once", func() error {
		h, err := shadow.handover(lineKey)
		if err != nil {
			return err
		}
		addCounts(lastLines, h.freed)
		if !maps.Equal(shadow.logged, nginxSent) {
			return fmt.Errorf("nginx logged %v, the clients made %v", shadow.logged, nginxSent)
		}
		return nil
	})
	if !maps.Equal(lastLines, last) {
		t.Errorf("the last agent counted %v, the lines no killed agent freed are %v", last, lastLines)
	}
	if err := spoolConsumed(n.logFile, n.logFile+".1"); err != nil {
		t.Errorf("the last agent counted every request, but the spool is not freed: %v", err)
	}

	// Live stamped sockets: the clients are gone, only scrapes remain.
	var ev map[string]uint64
	testenv.EventuallyNil(t, 20*time.Second, "stamped − closed back to a few", func() error {
		d, err := doc(agentPort)
		if err != nil {
			return err
		}
		ev = d.Meta.BPFEvents
		if live := int64(ev["stamped"]) - int64(ev["closed"]); live > 8 {
			return fmt.Errorf("%d stamped sockets not closed (%v)", live, ev)
		}
		return nil
	})
	for _, k := range []string{"storage_failed", "cookie_update_failed", "tuple_update_failed", "conns_update_failed", "close_unmatched"} {
		if ev[k] != 0 {
			t.Errorf("bpf event %s = %d, want 0 (%v)", k, ev[k], ev)
		}
	}
	if pxFirst.grew(pxLast) {
		t.Errorf("the proxy grew over %v: %v → %v", dur, pxFirst, pxLast)
	}
	if agFirst.grew(agLast) {
		t.Errorf("the agent grew over %v (first incarnation → last): %v → %v", dur, agFirst, agLast)
	}
	for _, p := range []*proc{a.proc, px} {
		if strings.Contains(p.out.String(), "level=ERROR") {
			t.Errorf("errors in the log of %s:\n%s", p.name, p.out.String())
		}
	}
	t.Logf("soak %v: %d nginx + %d proxy requests, %d SIGHUPs, %d interface re-creations, %d nginx reloads, %d reopens, %d agent kills under traffic; bpf %v",
		dur, nTotal, pTotal, sighups, ifaces, nreloads, reopens, kills, ev)
	t.Logf("agent kills: %d lines left in the spool by killed agents and counted by the next; %d lines counted by killed agents after their last scrape (gone with the counter reset)",
		leftInSpool, unscraped)
	t.Logf("proxy %v → %v; agent %v → %v", pxFirst, pxLast, agFirst, agLast)
}

// shadowLog follows the soak's shadow access log (every line nginx wrote
// to the spool, written after it) to tell, at each SIGKILL of the agent,
// which lines the killed agent freed (counted for good) and which it left
// in the spool for the next one.
type shadowLog struct {
	path    string
	off     int64
	pending map[string]int    // lines not yet known freed, by text
	logged  map[string]uint64 // every line, by key
}

// handoverResult is what a killed agent counted for good (freed), by key,
// and how many lines it left in the spool.
type handoverResult struct {
	freed map[string]uint64
	left  int
}

// handover reads the lines the shadow gained, then the lines left (not
// freed) in the spool files: a line of the shadow that is not left in the
// spool was freed, by the agent killed since the last handover (none runs
// now). With no spool files, every line not known freed is counted as
// freed: the end of the soak, where the last agent counted them.
func (s *shadowLog) handover(key func(string) (string, error), spools ...string) (handoverResult, error) {
	if s.logged == nil {
		s.logged = map[string]uint64{}
	}
	f, err := os.Open(s.path)
	if err != nil {
		return handoverResult{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, s.off, 1<<40))
	if err != nil {
		return handoverResult{}, err
	}
	b = b[:bytes.LastIndexByte(b, '\n')+1] // whole lines
	s.off += int64(len(b))
	for l := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		k, err := key(l)
		if err != nil {
			return handoverResult{}, fmt.Errorf("shadow log: %w", err)
		}
		s.logged[k]++
		s.pending[l]++
	}
	left := map[string]int{}
	for _, p := range spools {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return handoverResult{}, err
		}
		for l := range strings.SplitSeq(string(b), "\n") {
			if l = strings.TrimLeft(l, "\x00"); l != "" {
				left[l]++
			}
		}
	}
	r := handoverResult{freed: map[string]uint64{}}
	for l, c := range s.pending {
		stay := min(c, left[l])
		if stay < c {
			k, _ := key(l)
			r.freed[k] += uint64(c - stay)
		}
		r.left += stay
		if stay == 0 {
			delete(s.pending, l)
		} else {
			s.pending[l] = stay
		}
	}
	return r, nil
}

// spoolConsumed returns nil when every byte of the files is in a hole or
// zero: what the ingest has read and freed, where a new agent starts.
func spoolConsumed(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		defer f.Close()
		off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
		if err != nil {
			continue // ENXIO: all holes
		}
		b, err := io.ReadAll(io.NewSectionReader(f, off, 1<<40))
		if err != nil {
			return err
		}
		if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
			return fmt.Errorf("%s: unread or unfreed bytes at offset %d", p, off+int64(i))
		}
	}
	return nil
}

// addSoakDevice creates soakDevice (a veth whose peer is in ns too: the
// kernel may lack the dummy driver), up, in ns.
func addSoakDevice(t *testing.T, ns *topo.NS) {
	t.Helper()
	ns.Run(t, "link", "add", soakDevice, "type", "veth", "peer", "name", soakDevice+"p")
	ns.Run(t, "link", "set", soakDevice, "up")
}
