package top

import (
	"context"
	"flag"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testServer is an exporter over a collector with a fixed clock: three
// series of two tags, with rates after one tick.
func testServer(t *testing.T, webConfig string) *exporter.Server {
	t.Helper()
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	var mu sync.Mutex
	now := start
	c, err := collector.New(collector.Config{}, collector.Options{
		Build: collector.BuildInfo{Version: "1.2.3"},
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	v4, v4b, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.20"), netip.MustParseAddr("2001:db8::80")
	rec := func(tag string, vip netip.Addr, status, n int, d time.Duration) {
		s := c.Series(tag, vip)
		for range n {
			s.Record(collector.Outcome{Status: status, RequestBytes: 200, ResponseBytes: 5000, Duration: d})
		}
	}
	rec("maglev", v4, 200, 50, 2*time.Millisecond)
	rec("maglev", v4, 503, 10, 300*time.Millisecond)
	rec("maglev", v6, 200, 20, 20*time.Millisecond)
	rec("transit-v4", v4b, 301, 5, time.Millisecond)
	rec("transit-v4", v4b, 404, 15, 4*time.Millisecond)
	c.Series("transit-v4", v4b).ConnOpened()
	mu.Lock()
	now = start.Add(collector.RateInterval)
	mu.Unlock()
	c.Tick()
	mu.Lock()
	now = start.Add(time.Minute)
	mu.Unlock()
	srv, err := exporter.New(exporter.Options{Collector: c, WebConfigFile: webConfig, ListenAddress: "127.0.0.1:0",
		Health: func() exporter.Health {
			return exporter.Health{Component: "agent", AttributionMode: "auto", BPF: true, Pktinfo: true, DefaultTag: "direct"}
		}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	testenv.Golden(t, name, []byte(got), *update)
}

// TestOnceGolden: what --once prints, per VIP sorted by rate, per tag, and
// fitted to a narrow terminal.
func TestOnceGolden(t *testing.T) {
	hs := httptest.NewServer(testServer(t, "").Handler())
	defer hs.Close()
	src, err := NewSource(hs.URL, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "once.golden", Snapshot(d, View{}, 0, Styles{}))
	golden(t, "once-per-tag.golden", Snapshot(d, View{PerTag: true, Sort: SortTag}, 0, Styles{}))
	golden(t, "once-narrow.golden", Snapshot(d, View{Filter: "maglev"}, 60, Styles{}))
	for _, line := range strings.Split(Snapshot(d, View{}, 60, Styles{}), "\n") {
		if n := len([]rune(line)); n > 60 {
			t.Errorf("line of %d columns in a 60-column table: %q", n, line)
		}
	}
}

func TestSortAndFilter(t *testing.T) {
	hs := httptest.NewServer(testServer(t, "").Handler())
	defer hs.Close()
	src, _ := NewSource(hs.URL+exporter.StatszPath, "", 5*time.Second)
	d, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	order := func(v View) string {
		var out []string
		for _, r := range Rows(d, v) {
			out = append(out, r.Tag+"/"+r.VIP)
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		v    View
		want string
	}{
		{View{Sort: SortRate}, "maglev/192.0.2.10 maglev/2001:db8::80 transit-v4/192.0.2.20"},
		{View{Sort: SortLatency}, "maglev/192.0.2.10 maglev/2001:db8::80 transit-v4/192.0.2.20"},
		{View{Sort: SortErrors}, "maglev/192.0.2.10 maglev/2001:db8::80 transit-v4/192.0.2.20"},
		{View{Sort: SortRequests}, "maglev/192.0.2.10 maglev/2001:db8::80 transit-v4/192.0.2.20"},
		{View{Sort: SortTag, Filter: "2001"}, "maglev/2001:db8::80"},
		{View{Sort: SortRate, PerTag: true}, "maglev/2 VIPs transit-v4/1 VIP"},
		{View{Filter: "TRANSIT"}, "transit-v4/192.0.2.20"},
	} {
		if got := order(tc.v); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.v, got, tc.want)
		}
	}
	perTag := Rows(d, View{PerTag: true, Filter: "maglev"})
	if len(perTag) != 1 || perTag[0].Requests != 80 || perTag[0].Shares["5xx"] != 10.0/80 {
		t.Errorf("maglev per tag: %+v", perTag)
	}
	if _, err := ParseSort("nope"); err == nil {
		t.Error("ParseSort accepted nope")
	}
}

// TestSourceAuthAndTLS: basic auth and TLS from a Prometheus HTTP client
// configuration file, and clear errors without them.
func TestSourceAuthAndTLS(t *testing.T) {
	webConfig, cert := testenv.WebConfig(t, true)
	srv := testServer(t, webConfig)
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	base := "https://" + ln.Addr().String()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, cert, 0o600)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yml", "basic_auth:\n  username: alice\n  password: secret\ntls_config:\n  ca_file: "+ca+"\n")
	noAuth := write("noauth.yml", "tls_config:\n  ca_file: "+ca+"\n")
	for _, tc := range []struct{ name, cfg, want string }{
		{"auth and CA", good, ""},
		{"no auth", noAuth, "401 Unauthorized"},
		{"unknown CA", "", "certificate signed by unknown authority"},
	} {
		src, err := NewSource(base, tc.cfg, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Fetch(context.Background())
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewSource("ftp://x", "", time.Second); err == nil {
		t.Error("NewSource accepted ftp://")
	}
	if _, err := NewSource(base, filepath.Join(dir, "missing.yml"), time.Second); err == nil {
		t.Error("NewSource accepted a missing config file")
	}
}

// TestModelKeysAndLostConnection drives the bubbletea model with key and
// fetch messages, as the program does.
func TestModelKeysAndLostConnection(t *testing.T) {
	hs := httptest.NewServer(testServer(t, "").Handler())
	src, _ := NewSource(hs.URL, "", time.Second)
	m := &model{opts: Options{Source: src, Interval: time.Second}, ctx: context.Background()}
	step := func(msg tea.Msg) {
		_, cmd := m.Update(msg)
		if _, ok := msg.(tick); ok && cmd != nil {
			m.Update(cmd())
		}
	}
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 20})
	if !strings.Contains(m.View(), "connecting") {
		t.Errorf("before the first fetch:\n%s", m.View())
	}
	step(tick{})
	if v := m.View(); !strings.Contains(v, "maglev") || !strings.Contains(v, "transit-v4") || !strings.Contains(v, "BPF attached") {
		t.Fatalf("after a fetch:\n%s", v)
	}
	keys := func(s string) {
		for _, r := range s {
			switch r {
			case '\n':
				step(tea.KeyMsg{Type: tea.KeyEnter})
			default:
				step(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
			}
		}
	}
	keys("/transit\n")
	step(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("/x")}) // typed faster than read: one message
	step(tea.KeyMsg{Type: tea.KeyBackspace})
	step(tea.KeyMsg{Type: tea.KeyEnter})
	if v := m.View(); strings.Contains(v, "maglev") || !strings.Contains(v, "transit-v4") || !strings.Contains(v, `filter "transit"`) {
		t.Errorf("filtered:\n%s", v)
	}
	step(tea.KeyMsg{Type: tea.KeyEsc})
	keys("vt")
	if v := m.View(); !strings.Contains(v, "2 VIPs") || !strings.Contains(v, "sort tag · per tag") {
		t.Errorf("per tag, sorted by tag:\n%s", v)
	}
	hs.Close()
	step(tick{})
	if v := m.View(); !strings.Contains(v, "connection lost") || !strings.Contains(v, "maglev") {
		t.Errorf("after the agent stopped:\n%s", v)
	}
	if _, cmd := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{'q'}}); cmd == nil || cmd() != tea.Quit() {
		t.Error("q does not quit")
	}
}

func TestFold(t *testing.T) {
	for _, tc := range []struct {
		s     string
		width int
		want  string
	}{
		{"short", 10, "short"},
		{"connect: connection refused", 12, "connect:\nconnection\nrefused"},
		{"abcdefghijkl", 5, "abcde\nfghij\nkl"},
		{"no limit at all", 0, "no limit at all"},
	} {
		if got := fold(tc.s, tc.width); got != tc.want {
			t.Errorf("fold(%q, %d) = %q, want %q", tc.s, tc.width, got, tc.want)
		}
	}
}

func TestRising(t *testing.T) {
	var r rising
	doc := func(misses, fallbacks uint64) *exporter.Document {
		return &exporter.Document{Meta: exporter.DocumentMeta{IfindexMisses: map[string]uint64{"ipv4": misses},
			AttributionFallbacks: map[string]uint64{"unresolved": fallbacks}}}
	}
	r.update(doc(5, 1))
	if got := r.text(Styles{}); got != "" {
		t.Errorf("first document: %q", got)
	}
	r.update(doc(7, 1))
	if got := r.text(Styles{}); got != " · misses rising !" {
		t.Errorf("misses up: %q", got)
	}
	r.update(doc(7, 2))
	if got := r.text(Styles{}); got != " · fallbacks rising !" {
		t.Errorf("fallbacks up: %q", got)
	}
}

// TestModelHeight: rows beyond the terminal's height are summarised in one line.
func TestModelHeight(t *testing.T) {
	hs := httptest.NewServer(testServer(t, "").Handler())
	defer hs.Close()
	src, _ := NewSource(hs.URL, "", time.Second)
	m := &model{opts: Options{Source: src, Interval: time.Second}, ctx: context.Background()}
	m.Update(tea.WindowSizeMsg{Width: 200, Height: 6})
	d, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m.Update(fetched{doc: d})
	v := m.View()
	if n := strings.Count(v, "\n") + 1; n > 6 {
		t.Errorf("%d lines on a 6-line terminal:\n%s", n, v)
	}
	if !strings.Contains(v, "… 2 more rows") {
		t.Errorf("no summary of the rows left out:\n%s", v)
	}
}

// TestColours: code classes are coloured on a colour terminal, and nothing
// is on a terminal without colours (or with --no-color).
func TestColours(t *testing.T) {
	hs := httptest.NewServer(testServer(t, "").Handler())
	defer hs.Close()
	src, _ := NewSource(hs.URL, "", 5*time.Second)
	d, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := lipgloss.NewRenderer(io.Discard)
	r.SetColorProfile(termenv.ANSI)
	coloured := Table(Rows(d, View{}), false, 0, NewStyles(r))
	for class, code := range map[string]string{"2xx": "\x1b[32m", "4xx": "\x1b[33m", "5xx": "\x1b[31m"} {
		if !strings.Contains(coloured, code) {
			t.Errorf("%s not coloured %q:\n%q", class, code, coloured)
		}
	}
	ascii := lipgloss.NewRenderer(io.Discard)
	ascii.SetColorProfile(termenv.Ascii)
	for name, out := range map[string]string{
		"no colour profile": Table(Rows(d, View{}), false, 0, NewStyles(ascii)),
		"--no-color":        Snapshot(d, View{}, 0, Styles{}),
	} {
		if strings.Contains(out, "\x1b[3") {
			t.Errorf("%s: colour escapes in\n%q", name, out)
		}
	}
}
