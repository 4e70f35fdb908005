package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
)

func newDeps(t testing.TB) Deps {
	t.Helper()
	tags := bindings.NewResolver(bindings.Spec{DefaultTag: "direct", Bindings: []bindings.Binding{{Device: "lo", Tag: "loopback"}}}, slog.New(slog.DiscardHandler))
	tags.SetLinks([]bindings.Link{{Index: 1, Name: "lo"}})
	attr, err := attribution.New(attribution.Options{Mode: attribution.ModeFallback, Bindings: tags})
	if err != nil {
		t.Fatal(err)
	}
	coll, err := collector.New(collector.Config{}, collector.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return Deps{Attributor: attr, Collector: coll}
}

// running starts p and stops it (draining) at cleanup.
func running(t testing.TB, p *Proxy) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	// wait until every listener has a server
	for i := 0; i < 200; i++ {
		p.mu.Lock()
		ok := p.runCtx != nil
		p.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("proxy not running")
}

// rawBackend serves each connection accepted on a loopback port with
// serve (closing it after) until the test ends; it returns host:port.
func rawBackend(tb testing.TB, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// codes returns requests per "tag vip code".
func codes(c *collector.Collector) map[string]uint64 {
	m := map[string]uint64{}
	for _, s := range c.Snapshot(collector.Filter{}).Series {
		for _, cc := range s.Codes {
			m[s.SourceTag+" "+s.VIP+" "+cc.Code] += cc.Requests
		}
	}
	return m
}

func waitCodes(t testing.TB, c *collector.Collector, want map[string]uint64) {
	t.Helper()
	var got map[string]uint64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = codes(c)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
	}
	t.Fatalf("codes = %v, want %v", got, want)
}

// waitLines waits until file holds n lines: a request is counted before it
// is logged, and the file is flushed every fileFlushInterval.
func waitLines(t testing.TB, file string, n int) {
	t.Helper()
	var lines int
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		data, _ := os.ReadFile(file)
		if lines = strings.Count(string(data), "\n"); lines >= n {
			return
		}
	}
	t.Fatalf("%s: %d lines, want %d", file, lines, n)
}

// writeCert writes a self-signed certificate for names and returns it.
func writeCert(t testing.TB, dir string, names ...string) config.ProxyCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	pc := config.ProxyCert{Cert: filepath.Join(dir, names[0]+".crt"), Key: filepath.Join(dir, names[0]+".key")}
	os.WriteFile(pc.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(pc.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return pc
}
