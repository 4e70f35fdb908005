package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestKeysDocumented checks that every key the decoder accepts (read from
// the Config structs) is documented in docs/config-guide.md, so a new key
// is a field plus its documentation and nothing else.
func TestKeysDocumented(t *testing.T) {
	guide, err := os.ReadFile("../docs/config-guide.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := Keys() // a section comes right before its first key
	for _, want := range []string{"log.level", "bindings.devices[].family", "proxy.upstreams[].health_check.path", "nginx.logtail.buffer"} {
		if !contains(keys, want) {
			t.Errorf("Keys() lacks %q: %v", want, keys)
		}
	}
	for i, k := range keys {
		if i+1 < len(keys) && strings.HasPrefix(keys[i+1], k) {
			continue // a section: its keys are documented one by one
		}
		if !documented(string(guide), k) {
			t.Errorf("key %s is not documented in docs/config-guide.md", k)
		}
	}
}

// documented reports whether the guide names key: some dotted suffix of it
// in backquotes (the section tables drop the section name), or its last
// element inside a "{a, b}" entry shape of a list.
func documented(guide, key string) bool {
	parts := strings.Split(key, ".")
	for i := range parts {
		if strings.Contains(guide, "`"+strings.Join(parts[i:], ".")+"`") {
			return true
		}
	}
	leaf := regexp.QuoteMeta(parts[len(parts)-1])
	return regexp.MustCompile(`\{[^}` + "`" + `]*\b` + leaf + `\b[^}]*\}`).MatchString(guide)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestEverySchemaTypeDecodes walks every field of Config (and of list
// entries) through the decoder with a null value: a field of a Go type the
// decoder does not know is reported.
func TestEverySchemaTypeDecodes(t *testing.T) {
	null := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	d := newDecoder("t.yml")
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		for _, f := range schema(v.Type()) {
			p := joinPath(prefix, f.key)
			fv := v.Field(f.index)
			d.value(p, null, fv, f.field.Tag.Get("example"))
			switch ft := fv.Type(); {
			case ft.Kind() == reflect.Struct && ft != durationType:
				walk(p, fv)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(p+"[]", reflect.New(ft.Elem()).Elem())
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Float64: // floats decodes its own
				d.value(p+"[]", null, reflect.New(ft.Elem()).Elem(), "")
			}
		}
	}
	walk("", reflect.ValueOf(&Config{}).Elem())
	for _, err := range d.errs {
		t.Error(err)
	}
	// The check itself works: a type the decoder does not know is reported.
	d = newDecoder("t.yml")
	var m map[string]int
	d.value("x", null, reflect.ValueOf(&m).Elem(), "")
	if len(d.errs) != 1 {
		t.Errorf("a map field: %d errors, want 1", len(d.errs))
	}
}
