package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ipng/ipng-stats/bindings"
)

// wantDefault is the documented default configuration.
func wantDefault() *Config {
	return &Config{
		Log: LogConfig{Level: "info", Format: "logfmt"},
		Web: WebConfig{ListenAddress: ":9113", ConfigFile: ""},
		BPF: BPFConfig{
			Cgroup:           "",
			PinDir:           "/sys/fs/bpf/ipng-stats",
			KeepOnExit:       false,
			CookieMapEntries: 65536,
			TupleMapEntries:  262144,
		},
		Attribution: AttributionConfig{Mode: "auto"},
		Bindings:    BindingsConfig{DefaultTag: bindings.DefaultTag, RescanInterval: 60 * time.Second},
		Metrics: MetricsConfig{
			MaxSeries:        10000,
			DurationBuckets:  []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
			SizeBuckets:      []float64{100, 1000, 10000, 100000, 1000000, 10000000},
			NativeHistograms: false,
		},
		Handshakes: HandshakesConfig{Enabled: true, Ports: []int{}, PortsRescanInterval: 10 * time.Second, DiagnoseInterval: time.Minute},
	}
}

func TestDefault(t *testing.T) {
	got := Default()
	if !reflect.DeepEqual(got, wantDefault()) {
		t.Fatalf("Default() = %+v\nwant %+v", got, wantDefault())
	}
	if len(got.Bindings.Devices) != 0 {
		t.Errorf("Default() has device bindings: %+v", got.Bindings.Devices)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	parsed, err := Parse(DefaultYAML(), "default.yaml")
	if err != nil {
		t.Fatalf("Parse(DefaultYAML()) = %v", err)
	}
	if !reflect.DeepEqual(parsed, got) {
		t.Errorf("Parse(DefaultYAML()) = %+v, want Default() %+v", parsed, got)
	}
	// Each call returns an independent value and an independent file.
	got.Metrics.DurationBuckets[0] = 42
	if Default().Metrics.DurationBuckets[0] != 0.001 {
		t.Error("Default() values share state")
	}
	y := DefaultYAML()
	y[0] = 'X'
	if DefaultYAML()[0] == 'X' {
		t.Error("DefaultYAML() returns shared bytes")
	}
	if !strings.Contains(string(DefaultYAML()), "# ") {
		t.Error("DefaultYAML() has no comments")
	}
}

func TestParseFull(t *testing.T) {
	want := &Config{
		Log: LogConfig{Level: "debug", Format: "json"},
		Web: WebConfig{ListenAddress: "[::1]:9200", ConfigFile: "/etc/ipng-stats/web.yml"},
		BPF: BPFConfig{
			Cgroup:           "system.slice/nginx.service",
			PinDir:           "/sys/fs/bpf/ipng-stats-test",
			KeepOnExit:       true,
			CookieMapEntries: 131072,
			TupleMapEntries:  1048576,
		},
		Attribution: AttributionConfig{Mode: "bpf"},
		Bindings: BindingsConfig{
			DefaultTag:     "local",
			RescanInterval: 150 * time.Second,
			Devices: []DeviceBinding{
				{Device: "eth1", Tag: "tag1", Line: 20},
				{Device: "eth2", Family: "ipv4", Tag: "tag2-v4", Line: 22},
				{Device: "eth2", Family: "ipv6", Tag: "tag2-v6", Line: 25},
				{Device: "gre-mg1", Line: 28},
				{Device: "eth3", Family: "any", Tag: "eth3-all", Line: 29},
			},
		},
		Metrics: MetricsConfig{
			MaxSeries:        500,
			DurationBuckets:  []float64{0.01, 0.1, 1},
			SizeBuckets:      []float64{1024, 1.5e6},
			NativeHistograms: true,
		},
		Handshakes: HandshakesConfig{Enabled: false, Ports: []int{80, 443}, PortsRescanInterval: 30 * time.Second, DiagnoseInterval: 5 * time.Minute},
	}
	got, err := Load(filepath.Join("testdata", "full.yml"))
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load(full.yml) =\n%+v\nwant\n%+v", got, want)
	}

	spec, err := got.BindingsSpec()
	if err != nil {
		t.Fatalf("BindingsSpec = %v", err)
	}
	wantSpec := bindings.Spec{DefaultTag: "local", Bindings: []bindings.Binding{
		{Device: "eth1", Family: bindings.FamilyAny, Tag: "tag1"},
		{Device: "eth2", Family: bindings.FamilyIPv4, Tag: "tag2-v4"},
		{Device: "eth2", Family: bindings.FamilyIPv6, Tag: "tag2-v6"},
		{Device: "gre-mg1", Family: bindings.FamilyAny},
		{Device: "eth3", Family: bindings.FamilyAny, Tag: "eth3-all"},
	}}
	if !reflect.DeepEqual(spec, wantSpec) {
		t.Errorf("BindingsSpec =\n%+v\nwant\n%+v", spec, wantSpec)
	}
}

// TestParsePartial checks that missing keys, empty sections and empty values
// keep the defaults.
func TestParsePartial(t *testing.T) {
	tests := []struct {
		name string
		in   string
		edit func(c *Config)
	}{
		{"empty file", "", func(*Config) {}},
		{"only comments", "# nothing here\n\n", func(*Config) {}},
		{"explicit empty document", "---\n", func(*Config) {}},
		{"empty sections", "log:\nweb:\nbpf:\nattribution:\nbindings:\nmetrics:\n", func(*Config) {}},
		{"null values", "log:\n  level: ~\nbindings:\n  devices:\nmetrics:\n  duration_buckets:\n", func(*Config) {}},
		{"one key", "log:\n  level: warn\n", func(c *Config) { c.Log.Level = "warn" }},
		{"empty string is a value", "web:\n  listen_address: \":0\"\n  config_file: \"\"\n", func(c *Config) { c.Web.ListenAddress = ":0" }},
		{"flow mapping", "bpf: {keep_on_exit: true, cgroup: /sys/fs/cgroup/x}", func(c *Config) {
			c.BPF.KeepOnExit = true
			c.BPF.Cgroup = "/sys/fs/cgroup/x"
		}},
		{"empty device list", "bindings:\n  devices: []\n", func(*Config) {}},
		{"integer buckets", "metrics:\n  size_buckets: [1, 2, 3]\n", func(c *Config) { c.Metrics.SizeBuckets = []float64{1, 2, 3} }},
		{"alias", "metrics:\n  size_buckets: &b [1, 2]\n  duration_buckets: *b\n", func(c *Config) {
			c.Metrics.SizeBuckets = []float64{1, 2}
			c.Metrics.DurationBuckets = []float64{1, 2}
		}},
		{"numeric tag stays text", "bindings:\n  default_tag: 0042\n", func(c *Config) { c.Bindings.DefaultTag = "0042" }},
		{"document end marker", "log:\n  level: error\n...\n", func(c *Config) { c.Log.Level = "error" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := wantDefault()
			tt.edit(want)
			got, err := Parse([]byte(tt.in), "t.yml")
			if err != nil {
				t.Fatalf("Parse = %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yml")
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if !strings.Contains(err.Error(), path) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load = %v, want an fs.ErrNotExist naming %s", err, path)
	}
}

func TestLoadNamesFileInErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipng-stats.yml")
	if err := os.WriteFile(path, []byte("log:\n  level: loud\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:2:10: log.level: unknown level "loud" (want debug, info, warn or error)`
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %s", err, want)
	}
}

// TestMarshalRoundTrip checks that yaml.Marshal of a Config (for printing
// the effective configuration) parses back to the same Config.
func TestMarshalRoundTrip(t *testing.T) {
	for _, name := range []string{"default", "full"} {
		t.Run(name, func(t *testing.T) {
			c := Default()
			if name == "full" {
				var err error
				if c, err = Load(filepath.Join("testdata", "full.yml")); err != nil {
					t.Fatal(err)
				}
			}
			out, err := yaml.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(out, "marshalled.yml")
			if err != nil {
				t.Fatalf("Parse(Marshal) = %v\n%s", err, out)
			}
			for i := range c.Bindings.Devices { // Line is not marshalled
				c.Bindings.Devices[i].Line = back.Bindings.Devices[i].Line
			}
			if !reflect.DeepEqual(back, c) {
				t.Errorf("round trip =\n%+v\nwant\n%+v\nYAML:\n%s", back, c, out)
			}
		})
	}
}

func TestBindingsSpecErrors(t *testing.T) {
	c := Default()
	c.Bindings.Devices = []DeviceBinding{{Device: "eth0", Family: "ipv5"}}
	if _, err := c.BindingsSpec(); err == nil || !strings.Contains(err.Error(), `bindings.devices[0].family: unknown family "ipv5"`) {
		t.Errorf("BindingsSpec = %v", err)
	}
	c.Bindings.Devices = []DeviceBinding{{Device: "eth0"}, {Device: "eth0", Family: "any"}}
	if _, err := c.BindingsSpec(); err == nil || !strings.Contains(err.Error(), "already bound") {
		t.Errorf("BindingsSpec = %v", err)
	}
}

// TestGuideExample parses the full example of docs/config-guide.md, so the
// guide cannot drift from what the parser accepts.
func TestGuideExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "config-guide.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, block := range strings.Split(string(doc), "```yaml\n")[1:] {
		block = block[:strings.Index(block, "```")]
		if !strings.HasPrefix(block, "# /etc/ipng-stats/ipng-stats.yml") {
			continue
		}
		n++
		c, err := Parse([]byte(block), "config-guide.md")
		if err != nil {
			t.Errorf("guide example does not parse: %v\n%s", err, block)
			continue
		}
		if _, err := c.BindingsSpec(); err != nil {
			t.Errorf("guide example BindingsSpec: %v", err)
		}
	}
	if n == 0 {
		t.Error("no example starting with \"# /etc/ipng-stats/ipng-stats.yml\" in the guide")
	}
}
