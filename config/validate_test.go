package config

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// TestValidate covers Validate on values set in code, as the CLI does after
// applying flags and environment variables: no file, no position, except
// for device bindings that remember their line.
func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		want []string // "" entries not allowed; nil = valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"port zero is allowed", func(c *Config) { c.Web.ListenAddress = "127.0.0.1:0" }, nil},
		{"ipv6 host", func(c *Config) { c.Web.ListenAddress = "[2001:db8::1]:9113" }, nil},
		{"absolute cgroup", func(c *Config) { c.BPF.Cgroup = "/sys/fs/cgroup/system.slice" }, nil},
		{"relative cgroup", func(c *Config) { c.BPF.Cgroup = "system.slice/./nginx.service" }, nil},
		{"map bounds inclusive", func(c *Config) {
			c.BPF.CookieMapEntries, c.BPF.TupleMapEntries = MinMapEntries, MaxMapEntries
		}, nil},
		{"rescan exactly 1s", func(c *Config) { c.Bindings.RescanInterval = time.Second }, nil},
		{"any plus specific family", func(c *Config) {
			c.Bindings.Devices = []DeviceBinding{
				{Device: "vlan100", Tag: "v100"},
				{Device: "vlan100", Family: "ipv4", Tag: "v100-v4"},
				{Device: "vlan100", Family: "ipv6", Tag: "v100-v6"},
			}
		}, nil},
		{"several devices on one tag", func(c *Config) {
			c.Bindings.Devices = []DeviceBinding{{Device: "gre-mg1", Tag: "maglev"}, {Device: "gre-mg2", Tag: "maglev"}}
		}, nil},
		{"overridden level", func(c *Config) { c.Log.Level = "trace" },
			[]string{`log.level: unknown level "trace" (want debug, info, warn or error)`}},
		{"overridden listen address", func(c *Config) { c.Web.ListenAddress = "" },
			[]string{`web.listen_address: invalid address "": missing port in address (want host:port, e.g. ":9113" or "[::1]:9113")`}},
		{"overridden pin dir", func(c *Config) { c.BPF.PinDir = "pins" },
			[]string{`bpf.pin_dir: must be an absolute path, got "pins"`}},
		{"cgroup with NUL", func(c *Config) { c.BPF.Cgroup = "a\x00b" },
			[]string{`bpf.cgroup: contains a NUL byte`}},
		{"zero map entries", func(c *Config) { c.BPF.CookieMapEntries = 0 },
			[]string{`bpf.cookie_map_entries: must be between 1024 and 16777216, got 0`}},
		{"negative rescan", func(c *Config) { c.Bindings.RescanInterval = -time.Second },
			[]string{`bindings.rescan_interval: must be at least 1s, got -1s (periodic rescans cannot be turned off)`}},
		{"empty default tag", func(c *Config) { c.Bindings.DefaultTag = "" },
			[]string{`bindings.default_tag: invalid tag "": want 1-63 characters of [A-Za-z0-9_.:-], starting with a letter or digit`}},
		{"duplicate from file keeps its line", func(c *Config) {
			c.Bindings.Devices = []DeviceBinding{{Device: "eth1", Line: 4}, {Device: "eth1", Family: "", Line: 9}}
		}, []string{`line 9: bindings.devices[1]: device "eth1" family any already bound at line 4`}},
		{"duplicate from code", func(c *Config) {
			c.Bindings.Devices = []DeviceBinding{{Device: "eth1", Family: "ipv6"}, {Device: "eth1", Family: "ipv6"}}
		}, []string{`bindings.devices[1]: device "eth1" family ipv6 already bound by bindings.devices[0]`}},
		{"empty device", func(c *Config) { c.Bindings.Devices = []DeviceBinding{{Tag: "x"}} },
			[]string{`bindings.devices[0].device: missing (every entry needs a device name)`}},
		{"device with slash", func(c *Config) { c.Bindings.Devices = []DeviceBinding{{Device: "a/b", Tag: "x"}} },
			[]string{`bindings.devices[0].device: invalid device "a/b": contains '/'`}},
		{"nil buckets", func(c *Config) { c.Metrics.DurationBuckets = nil },
			[]string{`metrics.duration_buckets: must list at least one bucket boundary`}},
		{"bucket after NaN compares with last good one", func(c *Config) {
			c.Metrics.SizeBuckets = []float64{10, math.NaN(), 5, 20}
		}, []string{
			`metrics.size_buckets[1]: must be a finite number, got NaN (the +Inf bucket is always added)`,
			`metrics.size_buckets[2]: 5 is not greater than the previous boundary 10 (boundaries must be strictly increasing)`,
		}},
		{"many at once", func(c *Config) {
			c.Log.Format = "xml"
			c.Attribution.Mode = ""
			c.Metrics.MaxSeries = 0
		}, []string{
			`log.format: unknown format "xml" (want logfmt or json)`,
			`attribution.mode: unknown mode "" (want auto, bpf or fallback)`,
			`metrics.max_series: must be at least 1, got 0`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tt.want)
			}
			if got := strings.Split(err.Error(), "\n"); !equalStrings(got, tt.want) {
				t.Errorf("Validate =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			for _, e := range Errors(err) {
				if e.File != "" || e.Column != 0 {
					t.Errorf("Validate error %+v has a file position", e)
				}
			}
			var e *Error
			if !errors.As(err, &e) || e.Path == "" {
				t.Errorf("errors.As(%v) did not give an *Error with a Path", err)
			}
		})
	}
}

func TestPathHelpers(t *testing.T) {
	for in, want := range map[string]string{"a.b[2].c": "a.b[2]", "a.b[2]": "a.b", "a.b": "a", "a": ""} {
		if got := parentPath(in); got != want {
			t.Errorf("parentPath(%q) = %q, want %q", in, got, want)
		}
	}
}
