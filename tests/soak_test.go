package tests

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// soakDuration is IPNG_STATS_SOAK (a Go duration, e.g. 10m for the
// documented run), 20 s by default: TestSoakReloads and TestSoakFaults
// together stay within about a minute in CI.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("IPNG_STATS_SOAK")
	if v == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("IPNG_STATS_SOAK=%q: %v", v, err)
	}
	return d
}

// TestSoakReloads: steady traffic through the agent's proxy from two
// tagged interfaces (eth1 IPv4, eth2 IPv6; keep-alive and new connections)
// while the agent is reloaded about 8 times a second (SIGHUP, each waited for, the
// bindings of an interface without traffic changing every time). At the
// end: no client request failed, every request is counted exactly once
// under its tag, and the agent's fds, threads and RSS did not grow.
func TestSoakReloads(t *testing.T) {
	dur := soakDuration(t)
	e := newAgentProxy(t, "")
	orig, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	// The e2e proxy configuration's 500 ms header timeout is for the tests
	// of slow clients: on a loaded machine a client descheduled between
	// connect and write would meet it (EOF), which is not what this test
	// is about. The first reload sets 10 s, before any traffic.
	base := []byte(strings.Replace(string(orig), "read_header: 500ms", "read_header: 10s", 1))
	if string(base) == string(orig) {
		t.Fatal("no read_header timeout to raise in the configuration")
	}
	if err := os.WriteFile(e.cfgPath, base, 0o644); err != nil {
		t.Fatal(err)
	}
	e.proc.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 20*time.Second, func() bool {
		return strings.Count(e.proc.out.String(), `msg="configuration reloaded"`) == 1
	}, "first reload")

	other := strings.Replace(string(base), "tag: maglev\n", "tag: maglev-b\n", 1)
	if other == string(base) {
		t.Fatal("no tun0 binding to change in the configuration")
	}

	type client struct {
		ns   *topo.NS
		fam  string
		dev  string
		keep bool
	}
	clients := []client{{e.topo.C1, "ipv4", "eth1", true}, {e.topo.C1, "ipv4", "eth1", false}, {e.topo.C2, "ipv6", "eth2", true}}
	var mu sync.Mutex
	sent := map[string]uint64{} // "tag vip 2xx"
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: c.ns.Dial, DisableKeepAlives: !c.keep}}
			defer hc.CloseIdleConnections()
			vip := e.topo.VIP4.String()
			if c.fam == "ipv6" {
				vip = e.topo.VIP6.String()
			}
			key := expectedTag(c.dev, c.fam) + " " + vip + " 2xx"
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Get(e.url(c.fam, e.port, "/status/200"))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, fmt.Sprintf("%s keep-alive %v at %s: %v", c.dev, c.keep, time.Now().Format(time.StampMilli), err))
				case resp.StatusCode != 200:
					failures = append(failures, fmt.Sprintf("%s keep-alive %v: %s", c.dev, c.keep, resp.Status))
				default:
					sent[key]++
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}

	pid := e.proc.cmd.Process.Pid
	take := func() procSample { return sampleProc(pid) }
	time.Sleep(2 * time.Second) // traffic under way before the first sample (not a synchronisation)
	first := take()
	reloads := 0
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		cfg := string(base)
		if reloads%2 == 0 {
			cfg = other
		}
		if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		e.proc.cmd.Process.Signal(syscall.SIGHUP)
		reloads++
		testenv.Eventually(t, 20*time.Second, func() bool {
			return strings.Count(e.proc.out.String(), `msg="configuration reloaded"`) == reloads+1
		}, "reload %d", reloads)

		time.Sleep(100 * time.Millisecond) // pacing: about 8 reloads a second, not a synchronisation
	}
	close(stop)
	wg.Wait()
	last := take()

	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d client requests failed across %d reloads:\n%s", len(failures), reloads, strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
	var total uint64
	for _, n := range sent {
		total += n
	}
	if total == 0 || reloads < 2 {
		t.Fatalf("no soak: %d requests, %d reloads", total, reloads)
	}
	var got map[string]uint64
	testenv.Eventually(t, 20*time.Second, func() bool {
		got, _, err = agentCounts(e.env)
		return err == nil && maps.Equal(got, sent)
	}, "every request counted")

	if last.fds > first.fds+16 || last.threads > first.threads+8 || last.rssKB > first.rssKB*3/2+16<<10 {
		t.Errorf("the agent grew over %v: fds %d → %d, threads %d → %d, RSS %d → %d kB", dur, first.fds, last.fds,
			first.threads, last.threads, first.rssKB, last.rssKB)
	}
	if strings.Contains(e.proc.out.String(), "level=ERROR") {
		t.Errorf("errors in the agent's log:\n%s", e.proc.out.String())
	}
	t.Logf("soak %v: %d requests, %d reloads, fds %d → %d, threads %d → %d, RSS %d → %d kB", dur, total, reloads,
		first.fds, last.fds, first.threads, last.threads, first.rssKB, last.rssKB)
}
