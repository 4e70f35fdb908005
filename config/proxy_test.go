package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestProxyParse(t *testing.T) {
	c, err := Parse([]byte(`
proxy:
  enabled: true
  listeners:
    - address: ":80"
      upstream: web
    - address: "[::]:443"
      upstream: web
      tls:
        - {cert: /etc/a.pem, key: /etc/a.key}
  upstreams:
    - name: web
      balance: least_conn
      servers: ["10.0.0.1:8080", "[2001:db8::1]:8080"]
      max_fails: 3
      fail_timeout: 5s
      keepalive_timeout: 3s
      health_check: {path: /healthz, interval: 2s, timeout: 1s}
  timeouts: {read_header: 5s, request: 30s, idle: 60s, connect: 2s, upstream: 20s}
  max_header_bytes: 8192
  drain_timeout: 10s
  access_log:
    file: "-"
    logtail: {target: "127.0.0.1:9999", buffer: 4096, flush_interval: 500ms}
`), "c.yml")
	if err != nil {
		t.Fatal(err)
	}
	want := ProxyConfig{
		Enabled: true,
		Listeners: []ProxyListener{{Address: ":80", Upstream: "web"},
			{Address: "[::]:443", Upstream: "web", TLS: []ProxyCert{{Cert: "/etc/a.pem", Key: "/etc/a.key"}}}},
		Upstreams: []ProxyUpstream{{Name: "web", Balance: "least_conn", Servers: []string{"10.0.0.1:8080", "[2001:db8::1]:8080"},
			MaxFails: 3, FailTimeout: 5 * time.Second, KeepaliveTimeout: 3 * time.Second,
			HealthCheck: ProxyHealthCheck{Path: "/healthz", Interval: 2 * time.Second, Timeout: time.Second}}},
		Timeouts: ProxyTimeouts{ReadHeader: 5 * time.Second, Request: 30 * time.Second, Idle: time.Minute,
			Connect: 2 * time.Second, Upstream: 20 * time.Second},
		MaxHeaderBytes: 8192, DrainTimeout: 10 * time.Second,
		AccessLog: ProxyAccessLogConfig{File: "-", Logtail: ProxyLogtailConfig{Target: "127.0.0.1:9999", Buffer: 4096, FlushInterval: 500 * time.Millisecond}},
	}
	if !reflect.DeepEqual(c.Proxy, want) {
		t.Errorf("proxy =\n%+v\nwant\n%+v", c.Proxy, want)
	}
	if d := Default().Proxy; !reflect.DeepEqual(d, ProxyConfig{}) {
		t.Errorf("default proxy section = %+v, want zero (disabled)", d)
	}
}

func TestProxyErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"enabled without listeners", "proxy:\n  enabled: true\n",
			[]string{"c.yml:2:12: proxy.enabled: proxy is enabled but has no listeners"}},
		{"unknown upstream", "proxy:\n  listeners:\n    - {address: \":80\", upstream: nope}\n",
			[]string{`c.yml:3:34: proxy.listeners[0].upstream: unknown upstream "nope" (define it in proxy.upstreams)`}},
		{"bad values", "proxy:\n  upstreams:\n    - name: web\n      balance: random\n      servers: [\"nohost\", \":80\"]\n      max_fails: -1\n      keepalive_timeout: 10us\n",
			[]string{`c.yml:4:16: proxy.upstreams[0].balance: unknown balance "random" (want round_robin or least_conn)`,
				`c.yml:5:17: proxy.upstreams[0].servers[0]: invalid address "nohost" (want host:port, e.g. "10.0.0.1:8080")`,
				`c.yml:5:27: proxy.upstreams[0].servers[1]: missing host in ":80"`,
				`c.yml:6:18: proxy.upstreams[0].max_fails: must not be negative, got -1`,
				`c.yml:7:26: proxy.upstreams[0].keepalive_timeout: must be 0 (the default, 4s) or at least 1ms, got 10µs`}},
		{"duplicates", "proxy:\n  listeners:\n    - {address: \":80\", upstream: a}\n    - {address: \":80\", upstream: a}\n  upstreams:\n    - {name: a, servers: [\"h:1\"]}\n    - {name: a, servers: [\"h:1\"]}\n",
			[]string{`c.yml:4:17: proxy.listeners[1].address: duplicate listener ":80"`,
				`c.yml:7:14: proxy.upstreams[1].name: duplicate upstream "a"`}},
		{"tls without key", "proxy:\n  listeners:\n    - address: \":443\"\n      upstream: a\n      tls: [{cert: a.pem}]\n  upstreams:\n    - {name: a, servers: [\"h:1\"]}\n",
			[]string{`c.yml:5:13: proxy.listeners[0].tls[0]: needs both cert and key`}},
		{"wrong types", "proxy:\n  listeners: {address: x}\n  drain_timeout: soon\n  timeouts: {idle: -1s}\n",
			[]string{`c.yml:2:14: proxy.listeners: want a list of entries like {address: ":80", upstream: web}; got a mapping`,
				`c.yml:3:18: proxy.drain_timeout: invalid duration "soon": want a number with a unit, like "60s" or "5m"`,
				`c.yml:4:20: proxy.timeouts.idle: must not be negative, got -1s`}},
		{"entry not a mapping", "proxy:\n  listeners:\n    - \":80\"\n    -\n  upstreams:\n    - {name: a, servers: [[h]]}\n",
			[]string{`c.yml:3:7: proxy.listeners[0]: want an entry like {address: ":80", upstream: web}; got ":80"`,
				`c.yml:4:6: proxy.listeners[1]: want an entry like {address: ":80", upstream: web}; got an empty value`,
				`c.yml:6:27: proxy.upstreams[0].servers[0]: want a string, got a list`}},
		{"unknown key", "proxy:\n  listener: []\n",
			[]string{`c.yml:2:3: proxy: unknown key "listener" (known: enabled, listeners, upstreams, timeouts, max_header_bytes, max_connections, http1_loop, drain_timeout, access_log); did you mean "listeners"?`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "c.yml")
			if err == nil {
				t.Fatal("no error")
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
