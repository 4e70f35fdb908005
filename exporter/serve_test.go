package exporter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// serve runs s on a loopback listener until the test ends and returns its
// base URL.
func serve(t *testing.T, s *Server, scheme string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return scheme + "://" + ln.Addr().String()
}

func TestBasicAuthAndTLS(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		name, scheme := "basic auth", "http"
		if withTLS {
			name, scheme = "basic auth over TLS", "https"
		}
		t.Run(name, func(t *testing.T) {
			c := newTestCollector(t, collector.Config{})
			populate(c)
			s, err := New(Options{Collector: c, WebConfigFile: webConfig(t, withTLS), ListenAddress: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			base := serve(t, s, scheme)
			// An unknown user is checked against exporter-toolkit's cost-10
			// bcrypt hash: seconds under -race on a busy machine.
			client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificate
			}}
			tests := []struct {
				user, pass string
				want       int
			}{
				{"", "", http.StatusUnauthorized},
				{"alice", "wrong", http.StatusUnauthorized},
				{"bob", "secret", http.StatusUnauthorized},
				{"alice", "secret", http.StatusOK},
			}
			for _, tc := range tests {
				req, _ := http.NewRequest(http.MethodGet, base+"/metrics?format=json", nil)
				if tc.user != "" {
					req.SetBasicAuth(tc.user, tc.pass)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Errorf("user %q: status %d, want %d", tc.user, resp.StatusCode, tc.want)
				}
				if withTLS && resp.TLS == nil {
					t.Error("response not over TLS")
				}
			}
		})
	}
}

// TestPromtoolCheckMetrics scrapes a real listener and runs `promtool check
// metrics` (Debian package prometheus) on the body, overflow series and
// native histograms included. Without promtool it
// skips, except under IPNG_STATS_E2E=1 where it fails.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Skip(t, "promtool not installed (apt-get install prometheus)")
	}
	c := newTestCollector(t, collector.Config{NativeHistograms: true})
	populate(c)
	// Also an overflow series and a rejected outcome.
	if err := c.SetConfig(collector.Config{MaxSeries: 3, NativeHistograms: true}); err != nil {
		t.Fatal(err)
	}
	c.Record("maglev1", mustAddr("198.51.100.7"), collector.Outcome{Status: 200, Duration: time.Millisecond})
	c.Record("bad tag", mustAddr("198.51.100.7"), collector.Outcome{Status: 200})
	s, err := New(Options{Collector: c})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s, "http")
	// promtool parses the Prometheus text format only (OpenMetrics is covered
	// by its golden file).
	for _, accept := range []string{"", "text/plain;version=0.0.4"} {
		req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, err = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: %d %v", resp.StatusCode, err)
		}
		if !bytes.Contains(buf.Bytes(), []byte(`vip="other"`)) {
			t.Error("scrape lacks the overflow series")
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = &buf
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if err != nil && !errors.As(err, &exitErr) {
			t.Fatal(err)
		}
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics (Accept %q): %v\n%s", accept, err, out)
		}
	}
}

func TestRunShutdown(t *testing.T) {
	c := newTestCollector(t, collector.Config{})
	s, err := New(Options{Collector: c, ListenAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	// A port already in use is an error, not a hang.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy, err := New(Options{Collector: c, ListenAddress: ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := busy.Run(context.Background()); err == nil {
		t.Error("Run on a busy port returned nil")
	}
}

func webConfig(t *testing.T, withTLS bool) string {
	path, _ := testenv.WebConfig(t, withTLS)
	return path
}
