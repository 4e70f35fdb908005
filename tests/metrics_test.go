package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
)

// scrape GETs path from the agent's exporter inside srv's namespace.
func (e *env) scrape(path string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: e.topo.Srv.Dial}}
	resp, err := client.Get("http://127.0.0.1:9113" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b), err
}

// statsDoc is the agent's JSON document.
func (e *env) statsDoc(query ...string) (*exporter.Document, error) {
	body, err := e.scrape("/.well-known/ipng/statsz?format=json" + strings.Join(query, ""))
	if err != nil {
		return nil, err
	}
	var doc exporter.Document
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		return nil, fmt.Errorf("statsz JSON: %w\n%s", err, body)
	}
	return &doc, nil
}

// connCounts returns connections total and active per "tag vip" from the
// agent's JSON.
func (e *env) connCounts(t *testing.T, query string) (map[string]uint64, map[string]int64) {
	t.Helper()
	doc, err := e.statsDoc(query)
	if err != nil {
		t.Fatal(err)
	}
	return fixtures.DocConnections(doc)
}

// TestAgentConnectionCounts: the agent counts every accepted connection per
// (source tag, VIP) from the program's events, for a server that reports
// nothing itself, and its active gauge returns to zero when they close.
func TestAgentConnectionCounts(t *testing.T) {
	e := newEnv(t, "")
	agent := e.startAgent("--web.listen-address", "127.0.0.1:9113")
	e.startTagServer("fallback") // the server does not use BPF: counts come from the agent alone
	want := map[string]uint64{}
	var open []*client
	for _, p := range paths {
		for _, fam := range families {
			for range 3 {
				c, err := e.connect(p.ns(e.topo), fam)
				if err != nil {
					t.Fatal(err)
				}
				vip := e.topo.VIP4.String()
				wantFam := "ipv4"
				if fam == "ipv6" {
					vip, wantFam = e.topo.VIP6.String(), "ipv6"
				}
				want[expectedTag(p.dev, wantFam)+" "+vip]++
				open = append(open, c)
			}
		}
	}
	var total map[string]uint64
	var active map[string]int64
	testenv.Eventually(t, 5*time.Second, func() bool {
		total, active = e.connCounts(t, "")
		return maps.Equal(total, want)
	}, "connection counts")
	for k, n := range want {
		if active[k] != int64(n) {
			t.Errorf("active %s = %d, want %d", k, active[k], n)
		}
	}
	for _, c := range open {
		c.conn.Close()
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		_, active = e.connCounts(t, "")
		for _, n := range active {
			if n != 0 {
				return false
			}
		}
		return true
	}, "active connections back to 0")

	// Filters apply to both formats.
	total, _ = e.connCounts(t, "&source_tag=maglev")
	for k := range total {
		if !strings.HasPrefix(k, "maglev ") {
			t.Errorf("source_tag=maglev returned %q", k)
		}
	}
	text, err := e.scrape("/metrics?source_tag=tag1")
	if err != nil {
		t.Fatal(err)
	}
	wantLine := fmt.Sprintf(`ipng_connections_total{source_tag="tag1",vip="%s"} %d`, e.topo.VIP4, want["tag1 "+e.topo.VIP4.String()])
	if !strings.Contains(text, wantLine) || strings.Contains(text, `source_tag="maglev"`) {
		t.Errorf("filtered /metrics lacks %q or has other tags:\n%s", wantLine, text)
	}
	if !strings.Contains(text, `ipng_bpf_events_total{event="stamped"}`) {
		t.Errorf("/metrics lacks the program's counters")
	}
	// promtool (Debian's prometheus package) finds nothing to complain about
	// in the agent's real exposition.
	full, err := e.scrape("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Skip(t, "promtool not installed (apt-get install prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(full)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if body, err := e.scrape("/metrics?source_tags=x"); err == nil || !strings.Contains(body, "source_tags") {
		t.Errorf("unknown parameter: %v %q", err, body)
	}
	if _, err := e.scrape("/-/ready"); err != nil {
		t.Errorf("/-/ready: %v", err)
	}

	// SIGHUP with new bindings: counters survive, new connections get the
	// new tag.
	before, _ := e.connCounts(t, "")
	newCfg := strings.Replace(bindingsYAML, "tag: maglev", "tag: maglev-new", 1)
	if err := os.WriteFile(e.cfgPath, []byte(newCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	agent.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 5*time.Second, func() bool { return strings.Contains(agent.out.String(), "configuration reloaded") }, "reload")
	c, err := e.connect(e.topo.LB, "ipv4")
	if err != nil {
		t.Fatal(err)
	}
	c.conn.Close()
	testenv.Eventually(t, 5*time.Second, func() bool {
		after, _ := e.connCounts(t, "")
		for k, n := range before {
			if after[k] != n {
				t.Fatalf("after reload %s = %d, was %d: counters must survive SIGHUP", k, after[k], n)
			}
		}
		return after["maglev-new "+e.topo.VIP4.String()] == 1
	}, "a connection counted under the new tag")
}
