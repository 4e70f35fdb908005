package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse checks that Parse never panics, that every failure is a list of
// positioned *Errors naming the file, that every success validates, and
// that a success survives a yaml.Marshal round trip.
func FuzzParse(f *testing.F) {
	f.Add(DefaultYAML())
	if full, err := os.ReadFile(filepath.Join("testdata", "full.yml")); err == nil {
		f.Add(full)
	}
	for _, s := range []string{
		"",
		"---\n",
		"log: {level: debug}\n---\nweb: {}\n",
		"bindings:\n  devices:\n    - device: eth1\n    - device: eth1\n      family: ipv4\n    - eth2\n",
		"metrics:\n  duration_buckets: [1, .nan, -1, .inf]\n  max_series: 99999999999999999999\n",
		"bpf:\n  cookie_map_entries: 0x10000\n  keep_on_exit: TRUE\n",
		"a: &x [*x]\n",
		"web: &w {listen_address: ':1'}\nlog: *w\n",
		"log:\n  <<: *a\n",
		"? [a]\n: b\n",
		"{[}",
		"\t",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yml")
		if err != nil {
			if c != nil {
				t.Fatalf("Parse returned a config and an error: %v", err)
			}
			errs := Errors(err)
			if len(errs) == 0 {
				t.Fatalf("error %v contains no *Error", err)
			}
			for _, e := range errs {
				if e.File != "fuzz.yml" || e.Msg == "" {
					t.Fatalf("bad error %+v", e)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		if _, err := c.BindingsSpec(); err != nil {
			t.Fatalf("Parse accepted a config that BindingsSpec rejects: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := Parse(out, "marshalled.yml")
		if err != nil {
			t.Fatalf("Parse(Marshal(c)) = %v\n%s", err, out)
		}
		for i := range back.Bindings.Devices {
			back.Bindings.Devices[i].Line = c.Bindings.Devices[i].Line
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip =\n%+v\nwant\n%+v", back, c)
		}
	})
}
