// Package config owns the agent's configuration file: its schema, its
// defaults (the embedded, commented default.yaml), decoding with
// file:line:column error positions, and semantic validation. It does not
// apply command-line flag or environment overrides (the CLI does that and
// then calls Validate again) and it does not act on any of the values.
//
// The schema is written once, as the Config structs: the decoder walks
// them by their yaml tags (see decode.go), so a new key is a field, its
// doc in docs/config-guide.md (TestKeysDocumented checks) and, if its
// values are restricted, a rule in validate.go.
package config

import (
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/ipng/ipng-stats/bindings"
)

//go:embed default.yaml
var defaultYAML []byte

// Config is the whole agent configuration. The yaml tags let callers print
// the effective configuration with yaml.Marshal; the result parses back to
// an equal Config.
type Config struct {
	Log         LogConfig         `yaml:"log"`
	Web         WebConfig         `yaml:"web"`
	BPF         BPFConfig         `yaml:"bpf"`
	Attribution AttributionConfig `yaml:"attribution"`
	Bindings    BindingsConfig    `yaml:"bindings"`
	Metrics     MetricsConfig     `yaml:"metrics"`
	Nginx       NginxConfig       `yaml:"nginx"`
	Proxy       ProxyConfig       `yaml:"proxy"`
	Handshakes  HandshakesConfig  `yaml:"handshakes"`
}

// HandshakesConfig configures the counting of TCP handshake stages on the
// bound interfaces (package handshake).
type HandshakesConfig struct {
	Enabled bool `yaml:"enabled"`
	// Ports are the local TCP ports counted; empty: every listening port
	// of the agent's network namespace, read every PortsRescanInterval.
	Ports               []int         `yaml:"ports,flow"`
	PortsRescanInterval time.Duration `yaml:"ports_rescan_interval"`
	// DiagnoseInterval is how often the agent logs which stage loses
	// handshakes, over the last interval.
	DiagnoseInterval time.Duration `yaml:"diagnose_interval"`
}

// MaxHandshakePorts bounds handshakes.ports (the program's port map).
const MaxHandshakePorts = 1024

// LogConfig selects the log verbosity and output format.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // logfmt or json
}

// WebConfig configures the scrape endpoint.
type WebConfig struct {
	ListenAddress string `yaml:"listen_address"` // host:port
	ConfigFile    string `yaml:"config_file"`    // exporter-toolkit web config; "" = plain HTTP
}

// BPFConfig configures where and how the sock_ops program is attached.
type BPFConfig struct {
	Cgroup           string `yaml:"cgroup"`  // "" = cgroup2 root; relative = below the cgroup2 mount
	PinDir           string `yaml:"pin_dir"` // absolute, on a bpf filesystem
	KeepOnExit       bool   `yaml:"keep_on_exit"`
	CookieMapEntries uint32 `yaml:"cookie_map_entries"`
	TupleMapEntries  uint32 `yaml:"tuple_map_entries"`
}

// AttributionConfig selects how connections are attributed to interfaces.
type AttributionConfig struct {
	Mode string `yaml:"mode"` // auto, bpf or fallback
}

// BindingsConfig is the device → source tag table.
type BindingsConfig struct {
	DefaultTag     string          `yaml:"default_tag"`
	RescanInterval time.Duration   `yaml:"rescan_interval"`
	Devices        []DeviceBinding `yaml:"devices" example:"{device: eth1, tag: transit}"`
}

// DeviceBinding is one entry of bindings.devices. It holds what the file
// said: Family "" means any, Tag "" means the device name (the same
// conventions as bindings.Binding).
type DeviceBinding struct {
	Device string `yaml:"device"`
	Family string `yaml:"family,omitempty"` // ipv4, ipv6, any or ""
	Tag    string `yaml:"tag,omitempty"`
	Line   int    `yaml:"-" config:"line"` // 1-based line in the file, 0 when not from a file
}

// MetricsConfig bounds and shapes the exported series.
type MetricsConfig struct {
	MaxSeries        int       `yaml:"max_series"`
	DurationBuckets  []float64 `yaml:"duration_buckets,flow"` // seconds
	SizeBuckets      []float64 `yaml:"size_buckets,flow"`     // bytes
	NativeHistograms bool      `yaml:"native_histograms"`
}

// Limits of the BPF LRU map sizes.
const (
	MinMapEntries = 1024
	MaxMapEntries = 1 << 24
)

// MaxBuckets bounds each histogram's list of boundaries (the collector's
// limit): every boundary is a series per (source_tag, vip).
const MaxBuckets = 64

// MinRescanInterval is the shortest accepted bindings.rescan_interval.
const MinRescanInterval = time.Second

// DefaultYAML returns the embedded default configuration file, comments
// included. It is a copy; callers may modify it.
func DefaultYAML() []byte {
	return bytes.Clone(defaultYAML)
}

// Default returns the default configuration, decoded from DefaultYAML. It
// has no device bindings. Every call returns a new value.
func Default() *Config {
	c := &Config{}
	if err := parseInto(c, defaultYAML, "default.yaml"); err != nil {
		// default.yaml is embedded and covered by tests; this is a build bug.
		panic(fmt.Sprintf("config: embedded default.yaml is invalid: %v", err))
	}
	return c
}

// Parse decodes a YAML configuration over the defaults and validates the
// result. filename is only used in error messages. An empty document yields
// the defaults. On failure it returns every problem found, joined; each is
// an *Error carrying the file, line and column.
func Parse(data []byte, filename string) (*Config, error) {
	c := Default()
	if err := parseInto(c, data, filename); err != nil {
		return nil, err
	}
	return c, nil
}

// MaxFileSize bounds the configuration file Load reads (1 MiB). A real
// configuration is a few kilobytes; the bound keeps a wrong path (a log
// file, /dev/zero) from growing the agent's memory.
const MaxFileSize = 1 << 20

// Load reads and parses the configuration file at path. It refuses what is
// not a regular file (after following symlinks: a directory, a FIFO, a
// device) and files larger than MaxFileSize, so a wrong path neither hangs
// nor grows memory. check, the agent's start and its SIGHUP reload all read
// the file here.
func Load(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	return Parse(data, path)
}

// readFile reads a regular file of at most MaxFileSize bytes. It opens
// with O_NONBLOCK, so opening a FIFO without a writer does not block, and
// checks the type of what it opened (not of the path, which may change).
func readFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file", path, fileKind(fi.Mode()))
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("%s is %d bytes, larger than the %d bytes (1 MiB) a configuration file may have", path, fi.Size(), MaxFileSize)
	}
	// The size may change between Stat and read: read one byte more than
	// allowed to notice a file that grew.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than the %d bytes (1 MiB) a configuration file may have", path, MaxFileSize)
	}
	return data, nil
}

// fileKind names the type of a file that is not regular, for messages.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "of type " + m.Type().String()
}

// parseInto overlays data onto c and validates the result.
func parseInto(c *Config, data []byte, filename string) error {
	d := newDecoder(filename)
	d.decode(c, data)
	if d.fatal {
		return joinSorted(d.errs)
	}
	v := &validator{file: filename, pos: d.pos, bad: d.bad, below: d.below}
	v.config(c)
	return joinSorted(append(d.errs, v.errs...))
}

// Validate checks the configuration's values, e.g. after flag and
// environment overrides were applied. It returns every problem found,
// joined; each is an *Error whose Path names the key. Device bindings that
// came from a file carry their Line.
func (c *Config) Validate() error {
	pos := make(map[string]position, len(c.Bindings.Devices))
	for i, b := range c.Bindings.Devices {
		if b.Line > 0 {
			pos[devicePath(i)] = position{line: b.Line}
		}
	}
	v := &validator{pos: pos}
	v.config(c)
	return joinSorted(v.errs)
}

// BindingsSpec converts the bindings section to a bindings.Spec, in file
// order. It fails if a family is invalid or the spec does not validate.
func (c *Config) BindingsSpec() (bindings.Spec, error) {
	spec := bindings.Spec{
		DefaultTag: c.Bindings.DefaultTag,
		Bindings:   make([]bindings.Binding, 0, len(c.Bindings.Devices)),
	}
	for i, b := range c.Bindings.Devices {
		fam, err := bindings.ParseFamily(b.Family)
		if err != nil {
			return bindings.Spec{}, fmt.Errorf("%s.family: %w", devicePath(i), err)
		}
		spec.Bindings = append(spec.Bindings, bindings.Binding{Device: b.Device, Family: fam, Tag: b.Tag})
	}
	if err := spec.Validate(); err != nil {
		return bindings.Spec{}, fmt.Errorf("bindings: %w", err)
	}
	return spec, nil
}

func devicePath(i int) string {
	return fmt.Sprintf("bindings.devices[%d]", i)
}
