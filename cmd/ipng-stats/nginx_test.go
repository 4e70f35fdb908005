package main

import (
	"strings"
	"testing"
)

func TestNginxSnippet(t *testing.T) {
	tests := []struct {
		name string
		cfg  string // "" = embedded default
		want []string
		code int
	}{
		{"default", "", []string{"log_format ipng_stats escape=json '{\"server_addr\":\"$server_addr\"",
			"access_log /run/ipng-stats/nginx/access.log ipng_stats buffer=64k flush=1s;",
			"tmpfs /run/ipng-stats/nginx tmpfs size="}, 0},
		{"configured file", "nginx:\n  log_file: /srv/spool/ngx.log\n", []string{"access_log /srv/spool/ngx.log ipng_stats buffer=64k flush=1s;",
			"tmpfs /srv/spool tmpfs"}, 0},
		{"bad config", "nginx:\n  log_file: rel.log\n", nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"nginx-snippet"}
			if tt.cfg != "" {
				args = append(args, "--config", writeFile(t, tt.cfg))
			}
			out, errOut, code := run(t, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
