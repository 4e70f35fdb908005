package config

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// ProxyConfig is the `proxy:` section: the built-in reverse proxy (package
// proxy). Zero values mean the defaults documented in docs/config-guide.md;
// package proxy applies them.
type ProxyConfig struct {
	Enabled        bool            `yaml:"enabled"`
	Listeners      []ProxyListener `yaml:"listeners,omitempty" example:"{address: \":80\", upstream: web}"`
	Upstreams      []ProxyUpstream `yaml:"upstreams,omitempty" example:"{name: web, servers: [\"10.0.0.1:8080\"]}"`
	Timeouts       ProxyTimeouts   `yaml:"timeouts,omitempty"`
	MaxHeaderBytes int             `yaml:"max_header_bytes,omitempty"`
	MaxConnections int             `yaml:"max_connections,omitempty"`
	// HTTP1Loop picks what serves plaintext HTTP/1.1: "own" (the
	// default: the proxy's own serving loop, package proxy) or "net_http".
	HTTP1Loop    string               `yaml:"http1_loop,omitempty"`
	DrainTimeout time.Duration        `yaml:"drain_timeout,omitempty"`
	AccessLog    ProxyAccessLogConfig `yaml:"access_log,omitempty"`
}

// ProxyListener is one entry of proxy.listeners.
type ProxyListener struct {
	Address  string      `yaml:"address"`                                           // host:port; ":80" = wildcard dual-stack
	Upstream string      `yaml:"upstream"`                                          // name of a proxy.upstreams entry
	TLS      []ProxyCert `yaml:"tls,omitempty" example:"{cert: a.pem, key: a.key}"` // certificates; non-empty = TLS with ALPN h2, http/1.1
}

// ProxyCert is a certificate chain and key, both PEM files. With several,
// the one matching the client's SNI is used (the first one otherwise).
type ProxyCert struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ProxyUpstream is one entry of proxy.upstreams: a pool of backends.
type ProxyUpstream struct {
	Name        string        `yaml:"name"`
	Balance     string        `yaml:"balance,omitempty"`                        // round_robin (default) or least_conn
	Servers     []string      `yaml:"servers,flow" example:"\"10.0.0.1:8080\""` // host:port
	MaxFails    int           `yaml:"max_fails,omitempty"`
	FailTimeout time.Duration `yaml:"fail_timeout,omitempty"`
	// KeepaliveTimeout closes upstream connections idle for longer (nginx's
	// keepalive_timeout in an upstream block); 0 means the default.
	KeepaliveTimeout time.Duration    `yaml:"keepalive_timeout,omitempty"`
	HealthCheck      ProxyHealthCheck `yaml:"health_check,omitempty"`
}

// ProxyHealthCheck configures active HTTP checks; an empty Path disables them.
type ProxyHealthCheck struct {
	Path     string        `yaml:"path,omitempty"`
	Interval time.Duration `yaml:"interval,omitempty"`
	Timeout  time.Duration `yaml:"timeout,omitempty"`
}

// ProxyTimeouts are the client and upstream timeouts.
type ProxyTimeouts struct {
	ReadHeader time.Duration `yaml:"read_header,omitempty"` // client: request line and headers
	Request    time.Duration `yaml:"request,omitempty"`     // client: whole request, body included
	Idle       time.Duration `yaml:"idle,omitempty"`        // client keep-alive
	Connect    time.Duration `yaml:"connect,omitempty"`     // upstream connect
	Upstream   time.Duration `yaml:"upstream,omitempty"`    // upstream: response headers, then between two body reads
}

// ProxyAccessLogConfig configures the JSON access log.
type ProxyAccessLogConfig struct {
	File    string             `yaml:"file,omitempty"` // "" off, "-" stdout, else a path
	Logtail ProxyLogtailConfig `yaml:"logtail,omitempty"`
}

// ProxyLogtailConfig sends access log lines over UDP.
type ProxyLogtailConfig struct {
	Target        string        `yaml:"target,omitempty"` // host:port; "" off
	Buffer        int           `yaml:"buffer,omitempty"` // bytes per datagram batch
	FlushInterval time.Duration `yaml:"flush_interval,omitempty"`
}

func (v *validator) proxy(c *ProxyConfig) {
	if c.Enabled && len(c.Listeners) == 0 {
		v.errorf("proxy.enabled", "proxy is enabled but has no listeners")
	}
	names := map[string]bool{}
	for i, u := range c.Upstreams {
		p := fmt.Sprintf("proxy.upstreams[%d]", i)
		switch {
		case u.Name == "":
			v.errorf(p+".name", "must not be empty")
		case names[u.Name]:
			v.errorf(p+".name", "duplicate upstream %s", quote(u.Name))
		}
		names[u.Name] = true
		if u.Balance != "" {
			v.oneOf(p+".balance", u.Balance, "balance", "round_robin", "least_conn")
		}
		if len(u.Servers) == 0 {
			v.errorf(p+".servers", "must list at least one host:port")
		}
		for j, s := range u.Servers {
			v.hostPort(fmt.Sprintf("%s.servers[%d]", p, j), s, false)
		}
		if u.MaxFails < 0 {
			v.errorf(p+".max_fails", "must not be negative, got %d", u.MaxFails)
		}
		v.nonNegative(p+".fail_timeout", u.FailTimeout)
		if k := u.KeepaliveTimeout; k < 0 || k > 0 && k < time.Millisecond {
			v.errorf(p+".keepalive_timeout", "must be 0 (the default, 4s) or at least 1ms, got %v", k)
		}
		if h := u.HealthCheck; h.Path != "" && h.Path[0] != '/' {
			v.errorf(p+".health_check.path", "must start with /, got %s", quote(h.Path))
		}
		v.nonNegative(p+".health_check.interval", u.HealthCheck.Interval)
		v.nonNegative(p+".health_check.timeout", u.HealthCheck.Timeout)
	}
	addrs := map[string]bool{}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("proxy.listeners[%d]", i)
		v.hostPort(p+".address", l.Address, true)
		if addrs[l.Address] {
			v.errorf(p+".address", "duplicate listener %s", quote(l.Address))
		}
		addrs[l.Address] = true
		if !names[l.Upstream] {
			v.errorf(p+".upstream", "unknown upstream %s (define it in proxy.upstreams)", quote(l.Upstream))
		}
		for j, t := range l.TLS {
			if t.Cert == "" || t.Key == "" {
				v.errorf(fmt.Sprintf("%s.tls[%d]", p, j), "needs both cert and key")
			}
		}
	}
	t := c.Timeouts
	for _, d := range []struct {
		k string
		v time.Duration
	}{{"read_header", t.ReadHeader}, {"request", t.Request}, {"idle", t.Idle}, {"connect", t.Connect}, {"upstream", t.Upstream}} {
		v.nonNegative("proxy.timeouts."+d.k, d.v)
	}
	if c.MaxHeaderBytes < 0 {
		v.errorf("proxy.max_header_bytes", "must not be negative, got %d", c.MaxHeaderBytes)
	}
	if c.MaxConnections < 0 {
		v.errorf("proxy.max_connections", "must not be negative, got %d", c.MaxConnections)
	}
	if c.HTTP1Loop != "" {
		v.oneOf("proxy.http1_loop", c.HTTP1Loop, "http1_loop", "net_http", "own")
	}
	v.nonNegative("proxy.drain_timeout", c.DrainTimeout)
	if lt := c.AccessLog.Logtail; lt.Target != "" {
		v.hostPort("proxy.access_log.logtail.target", lt.Target, false)
	}
	if c.AccessLog.Logtail.Buffer < 0 {
		v.errorf("proxy.access_log.logtail.buffer", "must not be negative, got %d", c.AccessLog.Logtail.Buffer)
	}
	v.nonNegative("proxy.access_log.logtail.flush_interval", c.AccessLog.Logtail.FlushInterval)
}

func (v *validator) nonNegative(path string, d time.Duration) {
	if d < 0 {
		v.errorf(path, "must not be negative, got %v", d)
	}
}

// hostPort checks host:port; an empty host is allowed for listeners only.
func (v *validator) hostPort(path, addr string, emptyHost bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, "invalid address %s (want host:port, e.g. \"10.0.0.1:8080\")", quote(addr))
		return
	}
	if host == "" && !emptyHost {
		v.errorf(path, "missing host in %s", quote(addr))
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		v.errorf(path, "invalid port %s in %s (want 1 to 65535)", quote(port), quote(addr))
	}
}
