package proxy

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ipng/ipng-stats/config"
)

func testPool(balance string, n int) *pool {
	u := config.ProxyUpstream{Name: "p", Balance: balance, MaxFails: 2, FailTimeout: time.Minute}
	for i := range n {
		u.Servers = append(u.Servers, "10.0.0."+string(rune('1'+i))+":80")
	}
	return newPool(u, withDefaults(config.ProxyConfig{}).Timeouts, newBufferPool(), slog.New(slog.DiscardHandler))
}

// TestPassiveHealth: max_fails failures take a backend out, with a backoff
// that doubles on every consecutive time out; a success resets it. A pool
// of one server never takes it out.
func TestPassiveHealth(t *testing.T) {
	tests := []struct {
		name     string
		servers  int
		failures int
		wantDown bool
		wantFor  time.Duration
	}{
		{"one failure", 3, 1, false, 0},
		{"max_fails", 3, 2, true, time.Minute},
		{"twice out", 3, 4, true, 2 * time.Minute},
		{"backoff capped", 3, 40, true, maxBackoff * time.Minute},
		{"single server", 1, 10, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testPool("round_robin", tc.servers)
			b := p.backends[0]
			for range tc.failures {
				p.failed(b)
			}
			now := time.Now()
			if down := !b.alive(now.UnixNano()); down != tc.wantDown {
				t.Fatalf("down = %v, want %v", down, tc.wantDown)
			}
			if tc.wantDown {
				left := time.Duration(b.downUntil.Load() - now.UnixNano())
				if left > tc.wantFor || left < tc.wantFor-time.Second {
					t.Errorf("out for %v, want %v", left, tc.wantFor)
				}
				for range 10 {
					if p.pick() == b {
						t.Fatal("picked a backend that is out")
					}
				}
				b.succeeded()
				if !b.alive(time.Now().UnixNano()) || b.downs.Load() != 0 {
					t.Error("success did not put the backend back")
				}
			}
		})
	}
}

func TestPick(t *testing.T) {
	rr := testPool("round_robin", 3)
	seen := map[*backend]int{}
	for range 30 {
		seen[rr.pick()]++
	}
	for _, b := range rr.backends {
		if seen[b] != 10 {
			t.Errorf("round robin: %s picked %d times, want 10", b.addr, seen[b])
		}
	}
	lc := testPool("least_conn", 3)
	lc.backends[0].active.Store(5)
	lc.backends[1].active.Store(1)
	lc.backends[2].active.Store(3)
	for range 10 {
		if b := lc.pick(); b != lc.backends[1] {
			t.Fatalf("least_conn picked %s", b.addr)
		}
	}
	for _, b := range lc.backends {
		b.hcDown.Store(true)
	}
	if b := lc.pick(); b != nil {
		t.Errorf("all out: picked %s", b.addr)
	}
}

// TestActiveHealthCheck: a backend answering the check path with a 5xx is
// taken out, and shows as down in ipng_proxy_upstream_up.
func TestActiveHealthCheck(t *testing.T) {
	deps := newDeps(t)
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer healthy.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer sick.Close()
	p, err := New(config.ProxyConfig{Listeners: []config.ProxyListener{{Address: freeAddr(t), Upstream: "web"}},
		Upstreams: []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(healthy), hostOf(sick)},
			HealthCheck: config.ProxyHealthCheck{Path: "/healthz", Interval: 20 * time.Millisecond}}}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	for i := 0; i < 200 && !p.pools["web"].backends[1].hcDown.Load(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	want := `
# HELP ipng_proxy_upstream_up Whether the proxy sends requests to an upstream server (1) or has taken it out after failures or a failed health check (0).
# TYPE ipng_proxy_upstream_up gauge
ipng_proxy_upstream_up{server="` + hostOf(healthy) + `",upstream="web"} 1
ipng_proxy_upstream_up{server="` + hostOf(sick) + `",upstream="web"} 0
`
	if err := testutil.CollectAndCompare(p, strings.NewReader(want), "ipng_proxy_upstream_up"); err != nil {
		t.Error(err)
	}
}
