// Package proxy is the built-in HTTP reverse proxy of ipng-stats: listeners
// (wildcard dual-stack by default, never bound to a device) attributed at
// accept, upstream pools with round robin or least connections, passive and
// optional active health checks, client and upstream timeouts, TLS with SNI
// and ALPN h2, WebSocket/Upgrade pass-through, X-Forwarded-For/-Proto/-Host,
// 502/504 on upstream failure, a JSON access log to a file, stdout and a UDP
// logtail target, reloads that keep listening sockets and a draining stop.
//
// It owns the proxy's sockets, servers, pools and access log. Accounting is
// package httpstats (the same code any embedding net/http server uses);
// attribution, counters and the scrape endpoint belong to packages
// attribution, collector and exporter, which it uses but must not touch; it
// reads its configuration as a config.ProxyConfig and never a file.
package proxy
