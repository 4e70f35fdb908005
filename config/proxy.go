package config

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// ProxyConfig is the `proxy:` section: the built-in reverse proxy (package
// proxy). Zero values mean the defaults documented in docs/config-guide.md;
// package proxy applies them.
type ProxyConfig struct {
	Enabled        bool                 `yaml:"enabled"`
	Listeners      []ProxyListener      `yaml:"listeners,omitempty"`
	Upstreams      []ProxyUpstream      `yaml:"upstreams,omitempty"`
	Timeouts       ProxyTimeouts        `yaml:"timeouts,omitempty"`
	MaxHeaderBytes int                  `yaml:"max_header_bytes,omitempty"`
	DrainTimeout   time.Duration        `yaml:"drain_timeout,omitempty"`
	AccessLog      ProxyAccessLogConfig `yaml:"access_log,omitempty"`
}

// ProxyListener is one entry of proxy.listeners.
type ProxyListener struct {
	Address  string      `yaml:"address"`       // host:port; ":80" = wildcard dual-stack
	Upstream string      `yaml:"upstream"`      // name of a proxy.upstreams entry
	TLS      []ProxyCert `yaml:"tls,omitempty"` // certificates; non-empty = TLS with ALPN h2, http/1.1
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
	Balance     string        `yaml:"balance,omitempty"` // round_robin (default) or least_conn
	Servers     []string      `yaml:"servers,flow"`      // host:port
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

func (d *decoder) proxy(path string, n *yaml.Node, dst *ProxyConfig) {
	d.fields(path, n, []field{
		{"enabled", func(p string, v *yaml.Node) { d.bool(p, v, &dst.Enabled) }},
		{"listeners", func(p string, v *yaml.Node) {
			dst.Listeners = nil
			d.list(p, v, "{address: \":80\", upstream: web}", func(p string, v *yaml.Node) {
				var l ProxyListener
				d.fields(p, v, []field{
					{"address", func(p string, v *yaml.Node) { d.str(p, v, &l.Address) }},
					{"upstream", func(p string, v *yaml.Node) { d.str(p, v, &l.Upstream) }},
					{"tls", func(p string, v *yaml.Node) {
						d.list(p, v, "{cert: a.pem, key: a.key}", func(p string, v *yaml.Node) {
							var c ProxyCert
							d.fields(p, v, []field{
								{"cert", func(p string, v *yaml.Node) { d.str(p, v, &c.Cert) }},
								{"key", func(p string, v *yaml.Node) { d.str(p, v, &c.Key) }},
							})
							l.TLS = append(l.TLS, c)
						})
					}},
				})
				dst.Listeners = append(dst.Listeners, l)
			})
		}},
		{"upstreams", func(p string, v *yaml.Node) {
			dst.Upstreams = nil
			d.list(p, v, "{name: web, servers: [\"10.0.0.1:8080\"]}", func(p string, v *yaml.Node) {
				var u ProxyUpstream
				d.fields(p, v, []field{
					{"name", func(p string, v *yaml.Node) { d.str(p, v, &u.Name) }},
					{"balance", func(p string, v *yaml.Node) { d.str(p, v, &u.Balance) }},
					{"servers", func(p string, v *yaml.Node) {
						d.list(p, v, "\"10.0.0.1:8080\"", func(p string, v *yaml.Node) {
							var s string
							d.str(p, v, &s)
							u.Servers = append(u.Servers, s)
						})
					}},
					{"max_fails", func(p string, v *yaml.Node) { d.int(p, v, &u.MaxFails) }},
					{"fail_timeout", func(p string, v *yaml.Node) { d.duration(p, v, &u.FailTimeout) }},
					{"keepalive_timeout", func(p string, v *yaml.Node) { d.duration(p, v, &u.KeepaliveTimeout) }},
					{"health_check", func(p string, v *yaml.Node) {
						d.fields(p, v, []field{
							{"path", func(p string, v *yaml.Node) { d.str(p, v, &u.HealthCheck.Path) }},
							{"interval", func(p string, v *yaml.Node) { d.duration(p, v, &u.HealthCheck.Interval) }},
							{"timeout", func(p string, v *yaml.Node) { d.duration(p, v, &u.HealthCheck.Timeout) }},
						})
					}},
				})
				dst.Upstreams = append(dst.Upstreams, u)
			})
		}},
		{"timeouts", func(p string, v *yaml.Node) {
			t := &dst.Timeouts
			d.fields(p, v, []field{
				{"read_header", func(p string, v *yaml.Node) { d.duration(p, v, &t.ReadHeader) }},
				{"request", func(p string, v *yaml.Node) { d.duration(p, v, &t.Request) }},
				{"idle", func(p string, v *yaml.Node) { d.duration(p, v, &t.Idle) }},
				{"connect", func(p string, v *yaml.Node) { d.duration(p, v, &t.Connect) }},
				{"upstream", func(p string, v *yaml.Node) { d.duration(p, v, &t.Upstream) }},
			})
		}},
		{"max_header_bytes", func(p string, v *yaml.Node) { d.int(p, v, &dst.MaxHeaderBytes) }},
		{"drain_timeout", func(p string, v *yaml.Node) { d.duration(p, v, &dst.DrainTimeout) }},
		{"access_log", func(p string, v *yaml.Node) {
			a := &dst.AccessLog
			d.fields(p, v, []field{
				{"file", func(p string, v *yaml.Node) { d.str(p, v, &a.File) }},
				{"logtail", func(p string, v *yaml.Node) {
					d.fields(p, v, []field{
						{"target", func(p string, v *yaml.Node) { d.str(p, v, &a.Logtail.Target) }},
						{"buffer", func(p string, v *yaml.Node) { d.int(p, v, &a.Logtail.Buffer) }},
						{"flush_interval", func(p string, v *yaml.Node) { d.duration(p, v, &a.Logtail.FlushInterval) }},
					})
				}},
			})
		}},
	})
}

// list decodes a sequence, calling item for each element with its path.
func (d *decoder) list(path string, n *yaml.Node, example string, item func(p string, v *yaml.Node)) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.invalid(n, path, "want a list of entries like %s; got %s", example, describe(n))
		return
	}
	for i, v := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = posOf(v)
		item(p, v)
	}
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
