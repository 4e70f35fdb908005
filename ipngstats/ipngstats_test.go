package ipngstats_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/ipngstats"
)

// configFor is a configuration binding lo to the tag "loopback", with pins
// that do not exist (so mode auto uses IP_PKTINFO).
func configFor(t *testing.T, mode string) []byte {
	pins := filepath.Join("/sys/fs/bpf", "ipngstats-test-absent-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	return fmt.Appendf(nil, `
attribution: {mode: %s}
bpf: {pin_dir: %s}
bindings:
  default_tag: elsewhere
  devices:
    - {device: lo, tag: loopback}
`, mode, pins)
}

// codeHandler answers /N with status N.
var codeHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
	if err != nil {
		code = http.StatusOK
	}
	w.WriteHeader(code)
	io.WriteString(w, "hello\n")
})

// TestEndToEnd runs the front door on loopback: requests over IPv4 and IPv6
// with several codes, then counts per (source_tag, vip, code) on its
// metrics handler.
func TestEndToEnd(t *testing.T) {
	acct, err := ipngstats.Parse(configFor(t, "auto"), "test.yml")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acct.Close() })
	if acct.Attributor().UsesBPF() || !acct.Attributor().UsesPktinfo() {
		t.Fatalf("without pins, want IP_PKTINFO only; BPF %v, pktinfo %v", acct.Attributor().UsesBPF(), acct.Attributor().UsesPktinfo())
	}
	metrics := httptest.NewServer(acct.MetricsHandler())
	t.Cleanup(metrics.Close)

	base := map[string]string{}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := acct.Listen(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: codeHandler}
		acct.Instrument(srv)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		base[addr] = "http://" + ln.Addr().String()
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: false}}
	t.Cleanup(client.CloseIdleConnections)
	get := func(url string, n int) {
		for range n {
			resp, err := client.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	get(base["127.0.0.1:0"]+"/200", 3)
	get(base["127.0.0.1:0"]+"/404", 2)
	get(base["127.0.0.1:0"]+"/503", 1)
	get(base["[::1]:0"]+"/204", 4)

	want := map[string]float64{
		"loopback 127.0.0.1 2xx": 3,
		"loopback 127.0.0.1 4xx": 2,
		"loopback 127.0.0.1 5xx": 1,
		"loopback ::1 2xx":       4,
	}
	// A request is recorded once its response is flushed.
	waitRequests(t, metrics.URL+"/metrics", want)

	if err := acct.Close(); err != nil {
		t.Fatal(err)
	}
	if err := acct.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// requests scrapes url and returns ipng_requests_total by "tag vip code".
func requests(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Samples(string(body), "ipng_requests_total", "source_tag", "vip", "code")
}

// waitRequests waits until the requests scraped from url are want.
func waitRequests(t *testing.T, url string, want map[string]float64) {
	t.Helper()
	testenv.EventuallyNil(t, 20*time.Second, "ipng_requests_total by tag vip code", func() error {
		if got := requests(t, url); !maps.Equal(got, want) {
			return fmt.Errorf("\n got %v\nwant %v", got, want)
		}
		return nil
	})
}

func TestListenAndServe(t *testing.T) {
	acct, err := ipngstats.Parse(configFor(t, "fallback"), "test.yml")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acct.Close() })
	// Find a free port, then serve on it through ListenAndServe.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := &http.Server{Addr: addr, Handler: codeHandler}
	done := make(chan error, 1)
	go func() { done <- acct.ListenAndServe(srv) }()
	var resp *http.Response
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err = http.Get("http://" + addr + "/418"); err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ListenAndServe: %v", err)
		default:
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := map[string]float64{"loopback 127.0.0.1 4xx": 1}
	metrics := httptest.NewServer(acct.MetricsHandler())
	defer metrics.Close()
	waitRequests(t, metrics.URL+"/metrics", want)
	srv.Close()
	if err := <-done; err != http.ErrServerClosed {
		t.Fatalf("ListenAndServe returned %v, want http.ErrServerClosed", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := ipngstats.Parse([]byte("bindings:\n  devices: eth1\n"), "bad.yml"); err == nil ||
		!strings.Contains(err.Error(), "bad.yml:2:12: bindings.devices: want a list of entries") {
		t.Errorf("bad YAML: got %v", err)
	}
	_, err := ipngstats.Parse(configFor(t, "bpf"), "test.yml")
	if err == nil || !strings.Contains(err.Error(), "opening the agent's maps") {
		t.Errorf("mode bpf without pins: got %v, want an error naming the agent's maps", err)
	}
	if _, err := ipngstats.Load(filepath.Join(t.TempDir(), "absent.yml")); err == nil {
		t.Error("Load of a missing file: no error")
	}
	cfg := config.Default()
	cfg.Bindings.DefaultTag = "bad tag"
	if _, err := ipngstats.New(cfg); err == nil || !strings.Contains(err.Error(), "bindings.default_tag") {
		t.Errorf("invalid config value: got %v", err)
	}
}
