package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ipng/ipng-stats/config"
)

// TestFastPath: request bodies, HEAD, 204, chunked and large responses,
// hop-by-hop headers dropped both ways, and upstream connections closed
// while idle.
func TestFastPath(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/body":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %d %q %q", r.Method, len(b), r.Header.Get("Connection"), r.Header.Get("X-Hop"))
		case "/nocontent":
			w.WriteHeader(204)
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		case "/big":
			w.Header().Set("Connection", "X-Secret")
			w.Header().Set("X-Secret", "hop")
			io.WriteString(w, big)
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	}))
	defer be.Close()
	deps := newDeps(t)
	addr := freeAddr(t)
	p, err := New(config.ProxyConfig{Listeners: []config.ProxyListener{{Address: addr, Upstream: "be"}},
		Upstreams: []config.ProxyUpstream{{Name: "be", Servers: []string{hostOf(be)}}}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	running(t, p)
	c := &http.Client{}
	tests := []struct {
		name, method, path, body string
		hdr                      http.Header
		status                   int
		want                     string
	}{
		{"post body", "POST", "/body", "0123456789", http.Header{"Connection": {"X-Hop"}, "X-Hop": {"1"}}, 200, `POST 10 "" ""`},
		{"head", "HEAD", "/", "", nil, 200, ""},
		{"get", "GET", "/", "", nil, 200, "hello"},
		{"no content", "GET", "/nocontent", "", nil, 204, ""},
		{"chunked", "GET", "/chunked", "", nil, 200, "part0;part1;part2;"},
		{"big", "GET", "/big", "", nil, 200, big},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // the second time on a reused upstream connection
				req, _ := http.NewRequest(tc.method, "http://"+addr+tc.path, strings.NewReader(tc.body))
				if tc.body == "" {
					req.Body = nil
				}
				for k, v := range tc.hdr {
					req.Header[k] = v
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status || string(b) != tc.want {
					t.Errorf("%d %.60q, want %d %.60q", resp.StatusCode, b, tc.status, tc.want)
				}
				if resp.Header.Get("X-Secret") != "" {
					t.Error("a header named by the upstream's Connection was passed on")
				}
				if tc.method == "HEAD" && resp.ContentLength != 5 {
					t.Errorf("HEAD Content-Length %d", resp.ContentLength)
				}
			}
		})
	}
	// Upstream connections closed while idle: retried on a fresh one.
	for range 5 {
		be.CloseClientConnections()
		if resp, body := get(t, c, "http://"+addr+"/"); resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("after the upstream closed its connections: %d %q", resp.StatusCode, body)
		}
	}
}
