package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/config"
)

// TestDrain: stopping lets a request in progress finish, closes an
// upgraded connection once the drain timeout has passed, and returns.
func TestDrain(t *testing.T) {
	deps := newDeps(t)
	be := newBackend(t, "a")
	addr := freeAddr(t)
	p, err := New(config.ProxyConfig{Listeners: []config.ProxyListener{{Address: addr, Upstream: "web"}},
		Upstreams:    []config.ProxyUpstream{{Name: "web", Servers: []string{hostOf(be)}}},
		DrainTimeout: 1500 * time.Millisecond}, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { p.Run(ctx); close(stopped) }()
	time.Sleep(50 * time.Millisecond)

	ws, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	io.WriteString(ws, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(ws)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v", err)
	}
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow") // takes a second
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cancel()
	if code := <-slow; code != 200 {
		t.Errorf("request in progress during the drain: %d", code)
	}
	io.WriteString(ws, "still here\n")
	if line, _ := br.ReadString('\n'); line != "still here\n" {
		t.Errorf("upgraded connection closed before the drain timeout: %q", line)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil || time.Since(start) < time.Second {
		t.Errorf("upgraded connection: %v after %v, want closed after the drain timeout", err, time.Since(start))
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}
