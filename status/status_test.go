package status

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/testenv"
)

// newServer is an exporter over a collector with two tags, with the page mounted.
func newServer(t *testing.T, webConfig string) *exporter.Server {
	t.Helper()
	c, err := collector.New(collector.Config{}, collector.Options{Build: collector.BuildInfo{Version: "9.9.9"}})
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::80")
	for range 3 {
		c.Series("tag1", v4).Record(collector.Outcome{Status: 200, RequestBytes: 100, ResponseBytes: 1000, Duration: time.Millisecond})
	}
	c.Series("tag1", v4).Record(collector.Outcome{Status: 503, Duration: time.Second})
	c.Series("maglev", v6).Record(collector.Outcome{Status: 404, Duration: 20 * time.Millisecond})
	backlog := int64(5 << 20)
	srv, err := exporter.New(exporter.Options{Collector: c, WebConfigFile: webConfig, ListenAddress: "127.0.0.1:0",
		Health: func() exporter.Health {
			return exporter.Health{Component: "agent", AttributionMode: "auto", Pktinfo: true, NginxBacklogBytes: &backlog,
				Bindings: []exporter.Binding{{Device: "eth1", Family: "any", SourceTag: "tag1", Ifindex: 3, Present: true},
					{Device: "tun0", Family: "any", SourceTag: "maglev"}}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := Mount(srv, nil); err != nil {
		t.Fatal(err)
	}
	return srv
}

func fetch(t *testing.T, h http.Handler, target string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Result(), string(b)
}

func TestPage(t *testing.T) {
	h := newServer(t, "").Handler()
	resp, page := fetch(t, h, "/status/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /status/: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	for _, want := range []string{
		`<tr data-tag="tag1" data-vip="192.0.2.10">`, `<td class="num req">4</td>`, // 3×200 + 1×503
		`<tr data-tag="maglev" data-vip="2001:db8::80">`, `<td class="num req">1</td>`,
		`<td class="num share">75.0%</td>`, `<td class="num share">25.0%</td>`, // tag1: 2xx, 5xx
		`<dt>BPF</dt><dd>not attached</dd>`, `<dt>attribution</dt><dd>auto (pktinfo)</dd>`,
		`<div class="warn"><dt>nginx backlog</dt><dd>5.24 MB</dd>`, `<dt>version</dt><dd>9.9.9</dd>`,
		`<th scope="row">eth1</th><td>any</td><td>tag1</td><td class="num">3</td>`, `<td class="num">absent</td>`,
		`data-json="../.well-known/ipng/statsz?format=json"`, `(2 of 2 series)`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("page names an absolute URL")
	}
	_, filtered := fetch(t, h, "/status/?q=MAGLEV")
	if strings.Contains(filtered, `data-tag="tag1"`) || !strings.Contains(filtered, `data-tag="maglev"`) || !strings.Contains(filtered, "(1 of 2 series)") {
		t.Errorf("?q=MAGLEV does not show maglev only:\n%s", filtered)
	}
	if _, none := fetch(t, h, "/status/?q=nothing"); !strings.Contains(none, "No series match “nothing”") {
		t.Errorf("empty filter result not said:\n%s", none)
	}
	if r, _ := fetch(t, h, "/status/?q="+strings.Repeat("x", 200)); r.StatusCode != http.StatusBadRequest {
		t.Errorf("long filter: %d, want 400", r.StatusCode)
	}
	for path, ctype := range map[string]string{"status.js": "text/javascript", "status.css": "text/css", "icon.svg": "image/svg+xml"} {
		if r, b := fetch(t, h, "/status/"+path); r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), ctype) || len(b) == 0 {
			t.Errorf("/status/%s: %d %q", path, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
	if r, _ := fetch(t, h, "/status/nope.js"); r.StatusCode != 404 {
		t.Errorf("unknown asset: %d", r.StatusCode)
	}
	if _, landing := fetch(t, h, "/"); !strings.Contains(landing, `href="/status/"`) {
		t.Error("landing page does not link the status page")
	}
}

// TestPageBehindBasicAuth: the page is on the exporter's server, so the web
// config's basic auth covers it.
func TestPageBehindBasicAuth(t *testing.T) {
	path, _ := testenv.WebConfig(t, false)
	srv := newServer(t, path)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	})
	for _, tc := range []struct {
		user, pass string
		want       int
	}{{"", "", 401}, {"alice", "wrong", 401}, {"alice", "secret", 200}} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/status/status.js", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("user %q: %d, want %d", tc.user, resp.StatusCode, tc.want)
		}
	}
}

func TestFormat(t *testing.T) {
	p := func(v float64) *float64 { return &v }
	for got, want := range map[string]string{
		FormatRate(0): "0.00", FormatRate(9.999): "10.00", FormatRate(12.34): "12.3", FormatRate(1234.5): "1234",
		FormatShare(0.25, true): "25.0%", FormatShare(0, false): "–",
		FormatSeconds(nil): "–", FormatSeconds(p(0.0005)): "500 µs", FormatSeconds(p(0.01234)): "12.3 ms", FormatSeconds(p(2.5)): "2.50 s",
		FormatBytes(999): "999 B", FormatBytes(1500): "1.50 kB", FormatBytes(5 << 20): "5.24 MB", FormatBytesPerSecond(0): "0 B/s",
		FormatUptime(59): "59s", FormatUptime(61): "1m 1s", FormatUptime(3700): "1h 1m", FormatUptime(90000): "1d 1h",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
