package config

import (
	"strings"
	"testing"
	"time"
)

func TestNginxSection(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want NginxConfig
		errs []string
	}{
		{"absent: zero values", "", NginxConfig{}, nil},
		{"all keys", "nginx:\n  enabled: true\n  log_file: /run/x/a.log\n  netns: /run/netns/web\n  poll_interval: 50ms\n  max_line_bytes: 4096\n  logtail:\n    target: 127.0.0.1:5140\n    buffer: 10\n",
			NginxConfig{Enabled: true, LogFile: "/run/x/a.log", Netns: "/run/netns/web", PollInterval: 50 * time.Millisecond, MaxLineBytes: 4096,
				Logtail: NginxLogtailConfig{Target: "127.0.0.1:5140", Buffer: 10}}, nil},
		{"relative log file", "nginx:\n  log_file: a.log\n", NginxConfig{},
			[]string{`c.yml:2:13: nginx.log_file: must be an absolute path, got "a.log"`}},
		{"relative netns", "nginx:\n  netns: web\n", NginxConfig{},
			[]string{`c.yml:2:10: nginx.netns: must be an absolute path like /run/netns/web or /proc/PID/ns/net, got "web"`}},
		{"tiny poll interval", "nginx:\n  poll_interval: 1us\n", NginxConfig{},
			[]string{`c.yml:2:18: nginx.poll_interval: must be at least 1ms, got 1µs`}},
		{"line limit", "nginx:\n  max_line_bytes: 10\n", NginxConfig{},
			[]string{`c.yml:2:19: nginx.max_line_bytes: must be between 256 and 1048576, got 10`}},
		{"logtail without port", "nginx:\n  logtail:\n    target: localhost\n", NginxConfig{},
			[]string{`c.yml:3:13: nginx.logtail.target: invalid address "localhost" (want host:port, e.g. "127.0.0.1:5140")`}},
		{"logtail port 0", "nginx:\n  logtail:\n    target: localhost:0\n", NginxConfig{},
			[]string{`c.yml:3:13: nginx.logtail.target: invalid port "0" in "localhost:0" (want a number from 1 to 65535)`}},
		{"negative buffer", "nginx:\n  logtail:\n    buffer: -1\n", NginxConfig{},
			[]string{`c.yml:3:13: nginx.logtail.buffer: must be at least 1 (0: the default), got -1`}},
		{"unknown key", "nginx:\n  enable: true\n", NginxConfig{},
			[]string{`c.yml:2:3: nginx: unknown key "enable" (known: enabled, log_file, netns, poll_interval, max_line_bytes, logtail); did you mean "enabled"?`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in), "c.yml")
			if tt.errs == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c.Nginx != tt.want {
					t.Errorf("got %+v, want %+v", c.Nginx, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.errs)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tt.errs, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.errs, "\n"))
			}
		})
	}
}

func TestNginxWithDefaults(t *testing.T) {
	got := NginxConfig{PollInterval: time.Second}.WithDefaults()
	want := NginxConfig{LogFile: DefaultNginxLogFile, PollInterval: time.Second, MaxLineBytes: DefaultNginxMaxLineBytes,
		Logtail: NginxLogtailConfig{Buffer: DefaultNginxLogtailBuffer}}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
