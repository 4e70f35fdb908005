// Command proxyarm runs the built-in proxy (package proxy) alone, for the
// accounting on ÷ off arms of tests/bench/proxy-peers.sh:
//
//	proxyarm -listen 127.0.0.1:18097 -upstream 127.0.0.1:18091 -accounting=true
//	proxyarm -listen 127.0.0.1:18098 -upstream 127.0.0.1:18091 -accounting=false
//
// With -accounting the proxy gets what `ipng-stats proxy` gives it with
// attribution.mode fallback: an Attributor (IP_PKTINFO, the bindings of the
// current namespace) and a Collector, so that every connection is
// attributed at accept and every request recorded. Without it, the proxy
// gets no Collector (proxy.Deps): connections are neither attributed nor
// counted, and nothing else changes (same loop, same GC target as a node
// that runs the proxy, no metrics endpoint in either).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/node"
	"github.com/ipng/ipng-stats/proxy"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18097", "the proxy's listener `host:port`")
	upstream := flag.String("upstream", "127.0.0.1:18091", "the backend `host:port`")
	accounting := flag.Bool("accounting", true, "attribute and count (false: proxy.Deps without a Collector)")
	loop := flag.String("loop", "own", "proxy.http1_loop: own or net_http")
	flag.Parse()
	if err := run(*listen, *upstream, *loop, *accounting); err != nil {
		fmt.Fprintln(os.Stderr, "proxyarm:", err)
		os.Exit(1)
	}
}

func run(listen, upstream, loop string, accounting bool) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(node.ProxyGCPercent)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var deps proxy.Deps
	deps.Logger = logger
	if accounting {
		tags := bindings.NewResolver(bindings.Spec{DefaultTag: "direct"}, logger)
		if err := tags.Scan(); err != nil {
			return fmt.Errorf("listing links: %w", err)
		}
		attr, err := attribution.New(attribution.Options{Mode: attribution.ModeFallback, Bindings: tags, Logger: logger})
		if err != nil {
			return err
		}
		coll, err := collector.New(collector.Config{}, collector.Options{Logger: logger})
		if err != nil {
			return err
		}
		deps.Attributor, deps.Collector = attr, coll
	}
	p, err := proxy.New(config.ProxyConfig{
		Listeners: []config.ProxyListener{{Address: listen, Upstream: "be"}},
		Upstreams: []config.ProxyUpstream{{Name: "be", Servers: []string{upstream}}},
		HTTP1Loop: loop,
	}, deps)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return p.Run(ctx)
}
