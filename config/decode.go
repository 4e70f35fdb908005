package config

import (
	"fmt"
	"math"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// position is a 1-based line and column in the file; column 0 = unknown.
type position struct{ line, col int }

// decoder walks a yaml.Node tree onto a Config, recording where each value
// came from (for the validator's messages) and which paths failed to decode
// (so the validator does not report them twice).
type decoder struct {
	file  string
	pos   map[string]position
	bad   map[string]bool // paths whose value failed to decode
	below map[string]bool // paths with a bad path strictly inside them
	errs  []error
	fatal bool // the YAML could not be parsed; nothing was decoded
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, pos: map[string]position{}, bad: map[string]bool{}, below: map[string]bool{}}
}

// field is a known key of a mapping and what to do with its value.
type field struct {
	key string
	set func(path string, v *yaml.Node)
}

func (d *decoder) root(c *Config, n *yaml.Node) {
	d.fields("", n, []field{
		{"log", func(p string, v *yaml.Node) {
			d.fields(p, v, []field{
				{"level", func(p string, v *yaml.Node) { d.str(p, v, &c.Log.Level) }},
				{"format", func(p string, v *yaml.Node) { d.str(p, v, &c.Log.Format) }},
			})
		}},
		{"web", func(p string, v *yaml.Node) {
			d.fields(p, v, []field{
				{"listen_address", func(p string, v *yaml.Node) { d.str(p, v, &c.Web.ListenAddress) }},
				{"config_file", func(p string, v *yaml.Node) { d.str(p, v, &c.Web.ConfigFile) }},
			})
		}},
		{"bpf", func(p string, v *yaml.Node) {
			d.fields(p, v, []field{
				{"cgroup", func(p string, v *yaml.Node) { d.str(p, v, &c.BPF.Cgroup) }},
				{"pin_dir", func(p string, v *yaml.Node) { d.str(p, v, &c.BPF.PinDir) }},
				{"keep_on_exit", func(p string, v *yaml.Node) { d.bool(p, v, &c.BPF.KeepOnExit) }},
				{"cookie_map_entries", func(p string, v *yaml.Node) { d.mapEntries(p, v, &c.BPF.CookieMapEntries) }},
				{"tuple_map_entries", func(p string, v *yaml.Node) { d.mapEntries(p, v, &c.BPF.TupleMapEntries) }},
			})
		}},
		{"attribution", func(p string, v *yaml.Node) {
			d.fields(p, v, []field{
				{"mode", func(p string, v *yaml.Node) { d.str(p, v, &c.Attribution.Mode) }},
			})
		}},
		{"bindings", func(p string, v *yaml.Node) {
			d.fields(p, v, []field{
				{"default_tag", func(p string, v *yaml.Node) { d.str(p, v, &c.Bindings.DefaultTag) }},
				{"rescan_interval", func(p string, v *yaml.Node) { d.duration(p, v, &c.Bindings.RescanInterval) }},
				{"devices", func(p string, v *yaml.Node) { d.devices(p, v, &c.Bindings.Devices) }},
			})
		}},
		{"metrics", func(p string, v *yaml.Node) {
			d.fields(p, v, []field{
				{"max_series", func(p string, v *yaml.Node) { d.int(p, v, &c.Metrics.MaxSeries) }},
				{"duration_buckets", func(p string, v *yaml.Node) { d.floats(p, v, &c.Metrics.DurationBuckets) }},
				{"size_buckets", func(p string, v *yaml.Node) { d.floats(p, v, &c.Metrics.SizeBuckets) }},
				{"native_histograms", func(p string, v *yaml.Node) { d.bool(p, v, &c.Metrics.NativeHistograms) }},
			})
		}},
		{"nginx", func(p string, v *yaml.Node) { d.nginx(p, v, &c.Nginx) }},
		{"proxy", func(p string, v *yaml.Node) { d.proxy(p, v, &c.Proxy) }},
		{"handshakes", func(p string, v *yaml.Node) {
			d.fields(p, v, []field{
				{"enabled", func(p string, v *yaml.Node) { d.bool(p, v, &c.Handshakes.Enabled) }},
				{"ports", func(p string, v *yaml.Node) { d.ints(p, v, &c.Handshakes.Ports) }},
				{"ports_rescan_interval", func(p string, v *yaml.Node) { d.duration(p, v, &c.Handshakes.PortsRescanInterval) }},
				{"diagnose_interval", func(p string, v *yaml.Node) { d.duration(p, v, &c.Handshakes.DiagnoseInterval) }},
			})
		}},
	})
}

// fields decodes a mapping with the given known keys. A null value (an
// empty section) leaves the defaults in place.
func (d *decoder) fields(path string, n *yaml.Node, fs []field) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	known := make([]string, len(fs))
	for i, f := range fs {
		known[i] = f.key
	}
	if n.Kind != yaml.MappingNode {
		d.invalid(n, path, "want a mapping with keys %s; got %s", strings.Join(known, ", "), describe(n))
		return
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kr := resolve(k)
		if kr.Kind != yaml.ScalarNode {
			d.report(k, path, "want a key name, got %s", describe(kr))
			continue
		}
		name := kr.Value
		if kr.ShortTag() == "!!merge" {
			d.report(k, path, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		if line, dup := seen[name]; dup {
			d.report(k, path, "duplicate key %s (first at line %d)", quote(name), line)
			continue
		}
		seen[name] = k.Line
		var set func(string, *yaml.Node)
		for _, f := range fs {
			if f.key == name {
				set = f.set
			}
		}
		if set == nil {
			msg := fmt.Sprintf("unknown key %s (known: %s)", quote(name), strings.Join(known, ", "))
			if s := suggest(name, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			d.report(k, path, "%s", msg)
			continue
		}
		child := joinPath(path, name)
		d.pos[child] = posOf(v)
		set(child, v)
	}
}

// devices decodes bindings.devices. Entries that fail to decode are still
// appended so that indexes in messages match the file.
func (d *decoder) devices(path string, n *yaml.Node, dst *[]DeviceBinding) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.invalid(n, path, "want a list of entries like {device: eth1, tag: transit}; got %s", describe(n))
		return
	}
	var out []DeviceBinding
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = posOf(item)
		b := DeviceBinding{Line: item.Line}
		if r := resolve(item); r.Kind != yaml.MappingNode {
			d.invalid(item, p, "want an entry like {device: eth1, tag: transit}; got %s", describe(r))
		} else {
			d.fields(p, r, []field{
				{"device", func(p string, v *yaml.Node) { d.str(p, v, &b.Device) }},
				{"family", func(p string, v *yaml.Node) { d.str(p, v, &b.Family) }},
				{"tag", func(p string, v *yaml.Node) { d.str(p, v, &b.Tag) }},
			})
		}
		out = append(out, b)
	}
	*dst = out
}

func (d *decoder) str(path string, n *yaml.Node, dst *string) {
	n = resolve(n)
	switch {
	case isNull(n):
	case n.Kind == yaml.ScalarNode:
		*dst = n.Value
	default:
		d.invalid(n, path, "want a string, got %s", describe(n))
	}
}

func (d *decoder) bool(path string, n *yaml.Node, dst *bool) {
	n = resolve(n)
	switch {
	case isNull(n):
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" && n.Decode(dst) == nil:
	default:
		d.invalid(n, path, "want true or false, got %s", describe(n))
	}
}

// integer decodes an integer scalar; ok is false if there is nothing to set.
func (d *decoder) integer(path string, n *yaml.Node) (i int64, ok bool) {
	n = resolve(n)
	switch {
	case isNull(n):
		return 0, false
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int":
		if err := n.Decode(&i); err != nil {
			d.invalid(n, path, "integer %s out of range", quote(n.Value))
			return 0, false
		}
		return i, true
	}
	d.invalid(n, path, "want an integer, got %s", describe(n))
	return 0, false
}

func (d *decoder) int(path string, n *yaml.Node, dst *int) {
	if i, ok := d.integer(path, n); ok {
		if int64(int(i)) != i {
			d.invalid(n, path, "integer %d out of range", i)
			return
		}
		*dst = int(i)
	}
}

func (d *decoder) mapEntries(path string, n *yaml.Node, dst *uint32) {
	if i, ok := d.integer(path, n); ok {
		if i < 0 || i > math.MaxUint32 {
			d.invalid(n, path, "%s", mapEntriesRange(i))
			return
		}
		*dst = uint32(i)
	}
}

func (d *decoder) duration(path string, n *yaml.Node, dst *time.Duration) {
	n = resolve(n)
	switch {
	case isNull(n):
	case n.Kind != yaml.ScalarNode:
		d.invalid(n, path, "want a duration like \"60s\" or \"5m\", got %s", describe(n))
	default:
		v, err := time.ParseDuration(n.Value)
		if err != nil {
			d.invalid(n, path, "invalid duration %s: want a number with a unit, like \"60s\" or \"5m\"", quote(n.Value))
			return
		}
		*dst = v
	}
}

// floats decodes a list of numbers. If any element is not a number the
// default is kept and the whole list is marked bad.
func (d *decoder) floats(path string, n *yaml.Node, dst *[]float64) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.invalid(n, path, "want a list of numbers like [0.1, 0.5, 1], got %s", describe(n))
		return
	}
	out := make([]float64, 0, len(n.Content))
	ok := true
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = posOf(item)
		r := resolve(item)
		var f float64
		if r.Kind != yaml.ScalarNode || (r.ShortTag() != "!!int" && r.ShortTag() != "!!float") || r.Decode(&f) != nil {
			d.invalid(item, p, "want a number, got %s", describe(r))
			ok = false
			continue
		}
		out = append(out, f)
	}
	if !ok {
		d.markBad(path)
		return
	}
	*dst = out
}

// ints decodes a list of integers. If any element is not an integer the
// default is kept and the whole list is marked bad.
func (d *decoder) ints(path string, n *yaml.Node, dst *[]int) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.invalid(n, path, "want a list of integers like [80, 443], got %s", describe(n))
		return
	}
	out := make([]int, 0, len(n.Content))
	ok := true
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = posOf(item)
		i, good := d.integer(p, item)
		if !good || int64(int(i)) != i {
			if good {
				d.invalid(item, p, "integer %d out of range", i)
			}
			ok = false
			continue
		}
		out = append(out, int(i))
	}
	if !ok {
		d.markBad(path)
		return
	}
	*dst = out
}

// report records a problem at n that does not invalidate a value.
func (d *decoder) report(n *yaml.Node, path, format string, args ...any) {
	p := posOf(n)
	d.errs = append(d.errs, &Error{File: d.file, Line: p.line, Column: p.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// invalid records a value that could not be decoded; the default is kept
// and the validator stays quiet about path.
func (d *decoder) invalid(n *yaml.Node, path, format string, args ...any) {
	d.markBad(path)
	d.report(n, path, format, args...)
}

func (d *decoder) markBad(path string) {
	d.bad[path] = true
	for p := path; p != ""; {
		p = parentPath(p)
		d.below[p] = true
	}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
