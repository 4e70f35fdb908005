package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/loader"
)

// TestNginxThroughAgent: the nginx ingest as operators run it, inside
// `ipng-stats agent` (nginx.enabled), served on the agent's scrape endpoint:
// requests over several paths and families count exactly per (tag, vip,
// code), and the same connections are counted per (tag, vip) from the
// program's events.
func TestNginxThroughAgent(t *testing.T) {
	n := newNginxEnv(t, 1, "")
	cfg := filepath.Join(n.dir, "agent-nginx.yml")
	yml := bindingsYAML + fmt.Sprintf("nginx:\n  enabled: true\n  log_file: %s\n  poll_interval: 20ms\n", n.logFile)
	if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	// A second agent with the ingest, its own pins and port, beside the one
	// newNginxEnv started.
	pins := filepath.Join(loader.DefaultBPFFS, "ipngt-"+randHex())
	t.Cleanup(func() { loader.Detach(pins) })
	agent := n.start("agent-nginx", n.topo.Srv.Exec(context.Background(), agentBin, "agent", "--config", cfg,
		"--bpf.cgroup", n.cg.Path, "--bpf.pin-dir", pins, "--web.listen-address", "127.0.0.1:9114"), false)
	waitFor(t, 10*time.Second, "agent running", func() bool {
		return strings.Contains(agent.out.String(), `msg="agent running"`)
	})

	want := map[string]uint64{}
	var sent uint64
	for _, c := range []struct {
		p    path
		fam  string
		code int
	}{{paths[0], "ipv4", 200}, {paths[0], "ipv6", 404}, {paths[1], "mapped", 503}, {paths[2], "ipv6", 301}, {paths[4], "ipv4", 200}} {
		cl := n.client(c.p.ns(n.topo), c.fam, n.port)
		wantFam := map[string]string{"ipv4": "ipv4", "ipv6": "ipv6", "mapped": "ipv4"}[c.fam]
		for range 4 {
			if err := cl.get(c.code); err != nil {
				t.Fatalf("%s %s: %v", c.p.name, c.fam, err)
			}
			want[expectedTag(c.p.dev, wantFam)+" "+n.vipLabel(c.fam)+" "+codeClass(c.code)]++
			sent++
		}
	}

	scrape := func() (map[string]uint64, error) {
		client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: n.topo.Srv.Dial}}
		resp, err := client.Get("http://127.0.0.1:9114/.well-known/ipng/statsz?format=json")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var doc exporter.Document
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, err
		}
		got := map[string]uint64{}
		for _, s := range doc.Series {
			for code, c := range s.Codes {
				got[s.SourceTag+" "+s.VIP+" "+code] += c.Requests
			}
		}
		return got, nil
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := scrape()
		if err == nil && maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests per (tag, vip, code) on the agent's endpoint after %d requests:\n got  %v (%v)\n want %v", sent, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
