package config

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NginxConfig is the `nginx:` section: ingest of nginx access logs written
// to a spool file on tmpfs (see package nginxlog). Zero values mean the
// defaults (WithDefaults).
type NginxConfig struct {
	// Enabled turns the ingest on.
	Enabled bool `yaml:"enabled"`
	// LogFile is the access log nginx writes and the agent consumes.
	LogFile string `yaml:"log_file"`
	// Netns is the network namespace nginx runs in (a path such as
	// /run/netns/web or /proc/PID/ns/net); empty means the agent's own.
	Netns string `yaml:"netns"`
	// PollInterval is how often the log file is checked for new lines when
	// the agent has caught up.
	PollInterval time.Duration `yaml:"poll_interval"`
	// MaxLineBytes bounds one access-log line; longer lines are rejected.
	MaxLineBytes int `yaml:"max_line_bytes"`
	// Logtail forwards every line, enriched, to a UDP target.
	Logtail NginxLogtailConfig `yaml:"logtail"`
}

// NginxLogtailConfig is `nginx.logtail`.
type NginxLogtailConfig struct {
	// Target is host:port of a UDP receiver; empty disables the logtail.
	Target string `yaml:"target"`
	// Buffer is how many lines may wait for the sender before lines are
	// dropped (and counted).
	Buffer int `yaml:"buffer"`
}

// Defaults of nginx settings; a zero value in NginxConfig means the default.
const (
	DefaultNginxLogFile       = "/run/ipng-stats/nginx/access.log"
	DefaultNginxPollInterval  = 100 * time.Millisecond
	DefaultNginxMaxLineBytes  = 16384
	DefaultNginxLogtailBuffer = 4096
)

// WithDefaults returns c with zero values replaced by the defaults.
func (c NginxConfig) WithDefaults() NginxConfig {
	if c.LogFile == "" {
		c.LogFile = DefaultNginxLogFile
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultNginxPollInterval
	}
	if c.MaxLineBytes == 0 {
		c.MaxLineBytes = DefaultNginxMaxLineBytes
	}
	if c.Logtail.Buffer == 0 {
		c.Logtail.Buffer = DefaultNginxLogtailBuffer
	}
	return c
}

// Limits of nginx settings.
const (
	MinNginxPollInterval = time.Millisecond
	MinNginxMaxLineBytes = 256
	MaxNginxMaxLineBytes = 1 << 20
)

func (v *validator) nginx(c *NginxConfig) {
	switch {
	case c.LogFile == "": // the default
	case strings.ContainsRune(c.LogFile, 0):
		v.errorf("nginx.log_file", "contains a NUL byte")
	case !filepath.IsAbs(c.LogFile):
		v.errorf("nginx.log_file", "must be an absolute path, got %s", quote(c.LogFile))
	}
	if c.Netns != "" && (strings.ContainsRune(c.Netns, 0) || !filepath.IsAbs(c.Netns)) {
		v.errorf("nginx.netns", "must be an absolute path like /run/netns/web or /proc/PID/ns/net, got %s", quote(c.Netns))
	}
	if c.PollInterval != 0 && c.PollInterval < MinNginxPollInterval {
		v.errorf("nginx.poll_interval", "must be at least %v, got %v", MinNginxPollInterval, c.PollInterval)
	}
	if c.MaxLineBytes != 0 && (c.MaxLineBytes < MinNginxMaxLineBytes || c.MaxLineBytes > MaxNginxMaxLineBytes) {
		v.errorf("nginx.max_line_bytes", "must be between %d and %d, got %d", MinNginxMaxLineBytes, MaxNginxMaxLineBytes, c.MaxLineBytes)
	}
	if t := c.Logtail.Target; t != "" {
		host, port, err := net.SplitHostPort(t)
		if err != nil || host == "" {
			v.errorf("nginx.logtail.target", "invalid address %s (want host:port, e.g. \"127.0.0.1:5140\")", quote(t))
		} else if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			v.errorf("nginx.logtail.target", "invalid port %s in %s (want a number from 1 to 65535)", quote(port), quote(t))
		}
	}
	if c.Logtail.Buffer < 0 {
		v.errorf("nginx.logtail.buffer", "must be at least 1 (0: the default), got %d", c.Logtail.Buffer)
	}
}
