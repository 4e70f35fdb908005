package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/ipngstats"
)

// envMetricsPort is the port the front-door server serves its metrics on.
const envMetricsPort = "IPNG_E2E_METRICS_PORT"

// frontDoorMain is a server built only on package ipngstats, as the README
// shows: it loads IPNG_E2E_CONFIG, answers /N with status N on
// IPNG_E2E_PORT and serves the metrics handler on IPNG_E2E_METRICS_PORT.
// Its first line is "ready bpf=<whether it uses the agent's maps>".
func frontDoorMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	acct, err := ipngstats.Load(os.Getenv(envConfig))
	if err != nil {
		fmt.Fprintf(os.Stderr, "frontdoor: %v\n", err)
		return 1
	}
	defer acct.Close()
	mln, err := net.Listen("tcp", "[::]:"+os.Getenv(envMetricsPort))
	if err != nil {
		fmt.Fprintf(os.Stderr, "frontdoor: %v\n", err)
		return 1
	}
	go http.Serve(mln, acct.MetricsHandler())
	ln, err := acct.Listen(ctx, "tcp", "[::]:"+os.Getenv(envPort))
	if err != nil {
		fmt.Fprintf(os.Stderr, "frontdoor: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			code = http.StatusOK
		}
		w.WriteHeader(code)
	})}
	acct.Instrument(srv)
	go func() { <-ctx.Done(); srv.Close() }()
	fmt.Printf("ready bpf=%v\n", acct.Attributor().UsesBPF())
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "frontdoor: %v\n", err)
		return 1
	}
	return 0
}

// startFrontDoor runs frontDoorMain in srv's namespace (and the test cgroup,
// where the agent's program stamps sockets) and returns its metrics port.
func (e *env) startFrontDoor(wantBPF bool) (*proc, int) {
	e.t.Helper()
	mport := e.topo.Srv.FreePort(e.t)
	cmd := helperCmd(e.topo.Srv, helperEnv+"=frontdoor", envConfig+"="+e.cfgPath,
		envPort+"="+strconv.Itoa(e.port), envMetricsPort+"="+strconv.Itoa(mport))
	p := e.startReady("frontdoor", "front-door server", cmd, true, fmt.Sprintf("ready bpf=%v", wantBPF), nil)
	return p, mport
}

// TestFrontDoorTags runs a server built on ipngstats alone in srv's
// namespace and checks that the interface a request arrived on gives its
// tag: eth1 (tag1), eth2 over IPv6 (tag2-v6) and the DSR tunnel tun0
// (maglev), first by IP_PKTINFO (no agent), then with a running agent's
// pinned maps.
func TestFrontDoorTags(t *testing.T) {
	e := newEnv(t, "")
	for _, tc := range []struct {
		name string
		bpf  bool
	}{{"pktinfo", false}, {"agent-maps", true}} {
		t.Run(tc.name, func(t *testing.T) {
			extra := "attribution: {mode: fallback}\n"
			if tc.bpf {
				extra = fmt.Sprintf("attribution: {mode: bpf}\nbpf: {pin_dir: %s}\n", e.pinDir)
				agent := e.startAgent()
				defer agent.stop(t, syscall.SIGTERM)
			}
			if err := os.WriteFile(e.cfgPath, []byte(bindingsYAML+extra), 0o644); err != nil {
				t.Fatal(err)
			}
			p, mport := e.startFrontDoor(tc.bpf)
			defer p.stop(t, syscall.SIGTERM)

			get := func(ns *topo.NS, vip netip.Addr, path string, n int) {
				t.Helper()
				for range n {
					if code, err := httpGet(ns, netip.AddrPortFrom(vip, uint16(e.port)), path); err != nil {
						t.Fatalf("%s: GET %s: %v", ns.Role(), path, err)
					} else if want := path[1:]; strconv.Itoa(code) != want {
						t.Fatalf("%s: GET %s: status %d", ns.Role(), path, code)
					}
				}
			}
			get(e.topo.C1, e.topo.VIP4, "/200", 2)
			get(e.topo.C2, e.topo.VIP6, "/500", 1)
			get(e.topo.Client, e.topo.VIP4, "/404", 3)

			want := map[string]float64{
				"tag1 192.0.2.10 2xx":         2,
				"tag2-v6 2001:db8:10::10 5xx": 1,
				"maglev 192.0.2.10 4xx":       3,
			}
			metrics := netip.AddrPortFrom(e.topo.SrvAddr["eth1"].V4, uint16(mport))
			var got map[string]float64
			defer func() {
				if t.Failed() {
					t.Logf("ipng_requests_total by tag vip code: got %v, want %v", got, want)
				}
			}()
			testenv.Eventually(t, 20*time.Second, func() bool {
				got = scrapeRequests(t, e.topo.C1, metrics)
				return fmt.Sprint(got) == fmt.Sprint(want)
			}, "the counts on the metrics handler")
		})
	}
}

// httpGet sends one GET from ns on a fresh connection and returns the status.
func httpGet(ns *topo.NS, to netip.AddrPort, path string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", to.String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// scrapeRequests reads ipng_requests_total from the metrics port at addr,
// from ns, by "tag vip code".
func scrapeRequests(t *testing.T, ns *topo.NS, addr netip.AddrPort) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr.String())
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: m\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return testenv.Samples(string(body), "ipng_requests_total", "source_tag", "vip", "code")
}
