package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestProxyTLS: one TLS listener with two certificates picked by SNI,
// HTTP/1.1 and HTTP/2 clients on both families, a WebSocket upgrade passed
// through, all counted per (tag, vip, code); the access log carries the
// tag and device of each request.
func TestProxyTLS(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := proxyCert(t, dir, "one.example")
	c2, k2 := proxyCert(t, dir, "two.example")
	logFile := filepath.Join(dir, "access.log")
	e := newProxyEnv(t, fmt.Sprintf(`
proxy:
  listeners:
    - address: ":%%PORT%%"
      upstream: web
      tls:
        - {cert: %s, key: %s}
        - {cert: %s, key: %s}
  upstreams:
    - name: web
      servers: ["%%BACKEND%%"]
  access_log:
    file: %s
`, c1, k1, c2, k2, logFile))

	want := map[string]uint64{}
	for _, fam := range []string{"ipv4", "ipv6"} {
		vip := map[string]netip.Addr{"ipv4": e.topo.VIP4, "ipv6": e.topo.VIP6}[fam]
		addr := netip.AddrPortFrom(vip, uint16(e.port)).String()
		for _, tc := range []struct {
			sni string
			h2  bool
		}{{"one.example", false}, {"two.example", true}} {
			tr := &http.Transport{DialContext: e.topo.C1.Dial, ForceAttemptHTTP2: tc.h2,
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: tc.sni}}
			if !tc.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/status/200")
			if err != nil {
				t.Fatalf("%s %s: %v", fam, tc.sni, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			tr.CloseIdleConnections()
			if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != tc.sni {
				t.Errorf("%s: SNI %s got certificate %s", fam, tc.sni, cn)
			}
			if wantMajor := map[bool]int{false: 1, true: 2}[tc.h2]; resp.ProtoMajor != wantMajor {
				t.Errorf("%s %s: %s", fam, tc.sni, resp.Proto)
			}
			want["tag1 "+vip.String()+" 2xx"]++
		}
	}

	// WebSocket upgrade over TLS from c2.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := e.topo.C2.Dial(ctx, "tcp6", netip.AddrPortFrom(e.topo.VIP6, uint16(e.port)).String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "two.example", NextProtos: []string{"http/1.1"}})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: two.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	for _, msg := range []string{"hello\n", "world\n"} {
		io.WriteString(c, msg)
		if got, _ := br.ReadString('\n'); got != msg {
			t.Errorf("echo %q, want %q", got, msg)
		}
	}
	c.Close()
	want["tag2-v6 "+e.topo.VIP6.String()+" 1xx"]++
	e.waitCounts(want)

	// The access log is flushed every second.
	var lines []string
	testenv.Eventually(t, 5*time.Second, func() bool {
		data, _ := os.ReadFile(logFile)
		lines = strings.Split(strings.TrimSpace(string(data)), "\n")
		return len(lines) == 5
	}, "access log lines")
	var last struct {
		SourceTag string `json:"source_tag"`
		Device    string `json:"device"`
		VIP       string `json:"vip"`
		Status    int    `json:"status"`
		Upstream  string `json:"upstream"`
	}
	if err := json.Unmarshal([]byte(lines[4]), &last); err != nil {
		t.Fatalf("access log line %q: %v", lines[4], err)
	}
	if last.SourceTag != "tag2-v6" || last.Device != "eth2" || last.VIP != e.topo.VIP6.String() || last.Status != 101 || last.Upstream != e.backend {
		t.Errorf("access log line %q", lines[4])
	}
}
