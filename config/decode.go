package config

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The decoder is driven by the Config structs: a key is its field's yaml
// tag, the accepted keys of a section are its struct's tagged fields in
// declaration order, and a value is decoded by its field's Go type:
//
//	string, bool, int       a scalar of that kind
//	uint32                  an integer in range (only BPF map sizes use it)
//	time.Duration           a string like "60s"
//	[]float64               a list of numbers
//	[]string, []struct      a list; the field's `example` tag shows one entry
//	struct                  a mapping, walked recursively
//
// A field tagged `config:"line"` (and yaml:"-") receives the line of the
// list entry that holds it. So a new key is written once, as a field with
// its yaml tag (plus its doc and, if needed, a validation rule).

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

func (d *decoder) root(c *Config, n *yaml.Node) {
	d.mapping("", n, reflect.ValueOf(c).Elem())
}

// schemaField is one key of a section: its name and the struct field.
type schemaField struct {
	key   string
	index int
	field reflect.StructField
}

// schema lists the keys of a struct type, in declaration order.
func schema(t reflect.Type) []schemaField {
	var out []schemaField
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || name == "" || !f.IsExported() {
			continue
		}
		out = append(out, schemaField{key: name, index: i, field: f})
	}
	return out
}

// Keys returns the keys the configuration file accepts, as dotted paths
// ("bindings.devices[].tag"), in schema order. Documentation tests use it
// to check that every key is documented.
func Keys() []string {
	var out []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for _, f := range schema(t) {
			p := joinPath(prefix, f.key)
			out = append(out, p)
			switch ft := f.field.Type; {
			case ft.Kind() == reflect.Struct && ft != durationType:
				walk(p, ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(p+"[]", ft.Elem())
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// mapping decodes a mapping onto the struct dst. A null value (an empty
// section) leaves the defaults in place.
func (d *decoder) mapping(path string, n *yaml.Node, dst reflect.Value) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	fs := schema(dst.Type())
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
		var f *schemaField
		for j := range fs {
			if fs[j].key == name {
				f = &fs[j]
			}
		}
		if f == nil {
			msg := fmt.Sprintf("unknown key %s (known: %s)", quote(name), strings.Join(known, ", "))
			if s := suggest(name, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			d.report(k, path, "%s", msg)
			continue
		}
		child := joinPath(path, name)
		d.pos[child] = posOf(v)
		d.value(child, v, dst.Field(f.index), f.field.Tag.Get("example"))
	}
}

// value decodes n onto dst by dst's type; example is the field's example
// entry, for lists.
func (d *decoder) value(path string, n *yaml.Node, dst reflect.Value, example string) {
	switch t := dst.Type(); {
	case t == durationType:
		d.duration(path, n, dst.Addr().Interface().(*time.Duration))
	case t.Kind() == reflect.String:
		d.str(path, n, dst.Addr().Interface().(*string))
	case t.Kind() == reflect.Bool:
		d.bool(path, n, dst.Addr().Interface().(*bool))
	case t.Kind() == reflect.Int:
		d.int(path, n, dst.Addr().Interface().(*int))
	case t.Kind() == reflect.Uint32:
		d.mapEntries(path, n, dst.Addr().Interface().(*uint32))
	case t.Kind() == reflect.Struct:
		d.mapping(path, n, dst)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Float64:
		d.floats(path, n, dst.Addr().Interface().(*[]float64))
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Int:
		d.ints(path, n, dst.Addr().Interface().(*[]int))
	case t.Kind() == reflect.Slice:
		d.list(path, n, dst, example)
	default:
		// A schema type this decoder does not know is a programming error
		// (TestEverySchemaTypeDecodes); it is reported, never a panic.
		d.invalid(n, path, "cannot decode a value of Go type %s (a bug in ipng-stats)", t)
	}
}

// list decodes a sequence of strings or of entries (structs). Entries that
// fail to decode are still appended so that indexes in messages match the
// file. A null value keeps the default.
func (d *decoder) list(path string, n *yaml.Node, dst reflect.Value, example string) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.invalid(n, path, "want a list of entries like %s; got %s", example, describe(n))
		return
	}
	elem := dst.Type().Elem()
	out := reflect.MakeSlice(dst.Type(), 0, len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = posOf(item)
		e := reflect.New(elem).Elem()
		if elem.Kind() == reflect.Struct {
			setLine(e, item.Line)
			if r := resolve(item); r.Kind != yaml.MappingNode {
				d.invalid(item, p, "want an entry like %s; got %s", example, describe(r))
			} else {
				d.mapping(p, r, e)
			}
		} else {
			d.value(p, item, e, "")
		}
		out = reflect.Append(out, e)
	}
	if out.Len() == 0 {
		out = reflect.Zero(dst.Type()) // an empty list decodes to nil
	}
	dst.Set(out)
}

// setLine stores line in the field of e tagged `config:"line"`, if any.
func setLine(e reflect.Value, line int) {
	for i := range e.NumField() {
		if e.Type().Field(i).Tag.Get("config") == "line" {
			e.Field(i).SetInt(int64(line))
		}
	}
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

// mapEntries decodes a uint32 field; the only ones are BPF map sizes, so
// an out-of-range value gets their range in its message.
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
	scalars(d, path, n, dst, "numbers like [0.1, 0.5, 1]", func(p string, item *yaml.Node) (float64, bool) {
		r := resolve(item)
		var f float64
		if r.Kind != yaml.ScalarNode || (r.ShortTag() != "!!int" && r.ShortTag() != "!!float") || r.Decode(&f) != nil {
			d.invalid(item, p, "want a number, got %s", describe(r))
			return 0, false
		}
		return f, true
	})
}

// ints decodes a list of integers. If any element is not an integer the
// default is kept and the whole list is marked bad.
func (d *decoder) ints(path string, n *yaml.Node, dst *[]int) {
	scalars(d, path, n, dst, "integers like [80, 443]", func(p string, item *yaml.Node) (int, bool) {
		i, good := d.integer(p, item)
		if !good || int64(int(i)) != i {
			if good {
				d.invalid(item, p, "integer %d out of range", i)
			}
			return 0, false
		}
		return int(i), true
	})
}

// scalars decodes a list whose elements elem decodes (reporting its own
// errors). If any element fails the default is kept and the whole list is
// marked bad; a null value keeps the default.
func scalars[T any](d *decoder, path string, n *yaml.Node, dst *[]T, like string, elem func(p string, item *yaml.Node) (T, bool)) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.invalid(n, path, "want a list of %s, got %s", like, describe(n))
		return
	}
	out := make([]T, 0, len(n.Content))
	ok := true
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.pos[p] = posOf(item)
		v, good := elem(p, item)
		if !good {
			ok = false
			continue
		}
		out = append(out, v)
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
