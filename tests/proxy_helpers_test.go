package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// proxyEnv is an `ipng-stats proxy` process in srv's namespace (IP_PKTINFO
// attribution, no BPF needed) with backends on srv's loopback.
type proxyEnv struct {
	*env
	web     int // metrics port in srv
	down    int // proxy port whose upstream has nothing listening
	backend string
	proc    *proc
}

// proxyBackend serves /status/N, /slow (1 s), /big (32 MiB), /echo (reads
// the whole body, then answers its length), /headers (the request headers
// as JSON) and /ws (an upgrade, then a line echo) inside srv; it returns its
// 127.0.0.1:port.
func proxyBackend(t *testing.T, tp *topo.Topo, name string) string {
	return startProxyBackend(t, tp, name, nil)
}

// startProxyBackend is proxyBackend with srv's settings taken from tune
// (nil: none).
func startProxyBackend(t *testing.T, tp *topo.Topo, name string, tune func(*http.Server)) string {
	ln, err := tp.Srv.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return // a truncated request gets no answer
		}
		w.Header().Set("X-Backend", name)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		json.NewEncoder(w).Encode(r.Header)
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.Header().Set("X-Backend", name)
		w.WriteHeader(code)
		io.WriteString(w, name)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
		}
		io.WriteString(w, "slow")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for range 512 {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for { // a line echo stands in for WebSocket frames
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(line)
			brw.Flush()
		}
	})
	srv := &http.Server{Handler: mux}
	if tune != nil {
		tune(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// newProxyEnv writes the config (proxy section from proxyYAML, with %PORT%,
// %DOWN%, %BACKEND% replaced) and starts the proxy with IP_PKTINFO
// attribution.
func newProxyEnv(t *testing.T, proxyYAML string) *proxyEnv {
	return newProxyEnvMode(t, proxyYAML, "fallback")
}

// newProxyEnvMode is newProxyEnv with an attribution mode; with "bpf" the
// agent runs first (attached to the test cgroup) and the proxy reads its
// pinned maps from inside that cgroup.
func newProxyEnvMode(t *testing.T, proxyYAML, mode string) *proxyEnv {
	return newProxyEnvWith(t, mode, nil, func(*topo.Topo) string { return proxyYAML })
}

// newProxyEnvWith is newProxyEnvMode with the backend made by backend (nil:
// proxyBackend) and the proxy section by yamlOf, both once the topology
// exists.
func newProxyEnvWith(t *testing.T, mode string, backend, yamlOf func(*topo.Topo) string) *proxyEnv {
	e := &proxyEnv{env: newEnv(t, "")}
	ports := e.distinctPorts(3, e.port)
	e.web, e.down = ports[0], ports[1]
	agentWeb := ports[2]
	if backend == nil {
		e.backend = proxyBackend(t, e.topo, "a")
	} else {
		e.backend = backend(e.topo)
	}
	e.writeProxyConfig(yamlOf(e.topo))
	if mode == "bpf" {
		e.startAgent("--web.listen-address", fmt.Sprintf("127.0.0.1:%d", agentWeb))
	}
	e.proc = e.start("proxy", e.topo.Srv.Exec(context.Background(), agentBin, "proxy", "--config", e.cfgPath,
		"--attribution.mode", mode, "--bpf.pin-dir", e.pinDir, "--web.listen-address", fmt.Sprintf("127.0.0.1:%d", e.web)), mode == "bpf")
	testenv.Eventually(t, 10*time.Second, func() bool {
		select {
		case <-e.proc.done:
			t.Fatalf("proxy exited: %v\n%s", e.proc.err, e.proc.out.String())
		default:
		}
		return strings.Contains(e.proc.out.String(), `msg="proxy command running"`)
	}, "proxy running")
	// The metrics port is bound just after that line: tests read it first.
	testenv.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := e.topo.Srv.Dial(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", e.web))
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the proxy's metrics port listening")
	return e
}

func (e *proxyEnv) writeProxyConfig(proxyYAML string) {
	r := strings.NewReplacer("%PORT%", strconv.Itoa(e.port), "%DOWN%", strconv.Itoa(e.down), "%BACKEND%", e.backend)
	if loop := os.Getenv("IPNG_STATS_HTTP1_LOOP"); loop != "" {
		// Run the proxy tests against another HTTP/1.1 serving loop.
		proxyYAML = strings.Replace(proxyYAML, "proxy:\n", "proxy:\n  http1_loop: "+loop+"\n", 1)
	}
	if err := os.WriteFile(e.cfgPath, []byte(bindingsYAML+r.Replace(proxyYAML)), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// client returns an HTTP client whose connections start in ns.
func proxyClient(ns *topo.NS) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: ns.Dial, MaxIdleConnsPerHost: 16}}
}

// url is http://VIP:port of the family.
func (e *proxyEnv) url(fam string, port int, path string) string {
	vip := e.topo.VIP4
	if fam == "ipv6" {
		vip = e.topo.VIP6
	}
	return "http://" + netip.AddrPortFrom(vip, uint16(port)).String() + path
}

// stats scrapes the proxy's JSON document.
func (e *proxyEnv) stats() (*exporter.Document, error) {
	c := proxyClient(e.topo.Srv)
	defer c.CloseIdleConnections()
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s?format=json", e.web, exporter.StatszPath))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var d exporter.Document
	return &d, json.NewDecoder(resp.Body).Decode(&d)
}

// counts returns requests per "tag vip code".
func (e *proxyEnv) counts() map[string]uint64 {
	d, err := e.stats()
	if err != nil {
		e.t.Fatalf("scrape: %v", err)
	}
	return fixtures.DocRequests(d)
}

// waitCounts waits until the counts are exactly want.
func (e *proxyEnv) waitCounts(want map[string]uint64) {
	e.t.Helper()
	fixtures.WaitCounts(e.t, 5*time.Second, "counts", func() (map[string]uint64, error) { return e.counts(), nil }, want)
}

// gauge returns the sum of requests_reading (or _writing) over all series.
func (e *proxyEnv) gauge(writing bool) int64 {
	d, err := e.stats()
	if err != nil {
		return 0
	}
	var n int64
	for _, s := range d.Series {
		if p := s.RequestsReading; !writing && p != nil {
			n += *p
		}
		if p := s.RequestsWriting; writing && p != nil {
			n += *p
		}
	}
	return n
}

// rawDial connects to the proxy's VIP4 port from ns.
func (e *proxyEnv) rawDial(ns *topo.NS) net.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp4", netip.AddrPortFrom(e.topo.VIP4, uint16(e.port)).String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// distinctPorts returns n free ports of srv that differ from each other and
// from taken: FreePort alone may hand out the same port twice.
func (e *env) distinctPorts(n int, taken ...int) []int {
	seen := map[int]bool{}
	for _, p := range taken {
		seen[p] = true
	}
	var out []int
	for len(out) < n {
		if p := e.topo.Srv.FreePort(e.t); !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
