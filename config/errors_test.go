package config

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// TestParseErrors pins the exact user-visible messages, one line per
// problem, in file order.
func TestParseErrors(t *testing.T) {
	const known = "(known: log, web, bpf, attribution, bindings, metrics, nginx, proxy, handshakes)"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		// Structure.
		{"unknown top-level key", "log:\n  level: info\nlgo: {}\n",
			[]string{`c.yml:3:1: unknown key "lgo" ` + known + `; did you mean "log"?`}},
		{"unknown key in section", "web:\n  listen_address: \":1\"\n  listen_adress: \":2\"\n",
			[]string{`c.yml:3:3: web: unknown key "listen_adress" (known: listen_address, config_file); did you mean "listen_address"?`}},
		{"flag-style key", "bpf:\n  pin-dir: /x\n",
			[]string{`c.yml:2:3: bpf: unknown key "pin-dir" (known: cgroup, pin_dir, keep_on_exit, cookie_map_entries, tuple_map_entries); did you mean "pin_dir"?`}},
		{"unknown key without suggestion", "metrics:\n  colour: blue\n",
			[]string{`c.yml:2:3: metrics: unknown key "colour" (known: max_series, duration_buckets, size_buckets, native_histograms)`}},
		{"duplicate key", "log:\n  level: info\n  level: debug\n",
			[]string{`c.yml:3:3: log: duplicate key "level" (first at line 2)`}},
		{"merge key", "log:\n  <<: {level: debug}\n",
			[]string{`c.yml:2:3: log: merge keys (<<) are not supported; write the keys out`}},
		{"top level is a list", "- log\n- web\n",
			[]string{`c.yml:1:1: want a mapping with keys log, web, bpf, attribution, bindings, metrics, nginx, proxy, handshakes; got a list`}},
		{"top level is a scalar", "hello\n",
			[]string{`c.yml:1:1: want a mapping with keys log, web, bpf, attribution, bindings, metrics, nginx, proxy, handshakes; got "hello"`}},
		{"section is a list", "web:\n  - listen_address\n",
			[]string{`c.yml:2:3: web: want a mapping with keys listen_address, config_file; got a list`}},
		{"section is a scalar", "log: debug\n",
			[]string{`c.yml:1:6: log: want a mapping with keys level, format; got "debug"`}},
		{"multiple documents", "log:\n  level: info\n---\nweb: {}\n",
			[]string{`c.yml:3:1: multiple YAML documents are not supported; remove the second "---" and what follows`}},

		// YAML syntax: the parser's line.
		{"syntax: mapping in scalar", "log:\n  level: info\n  format: a: b\n",
			[]string{`c.yml:3: invalid YAML: mapping values are not allowed in this context`}},
		{"syntax: bad indent", "log:\n  level: info\n format: json\n",
			[]string{`c.yml:3: invalid YAML: did not find expected key`}},
		{"syntax: unclosed flow", "log:\n  level: info\nmetrics:\n  size_buckets: [1, 2\nweb: {}\n",
			[]string{`c.yml:4: invalid YAML: did not find expected ',' or ']'`}},
		{"syntax: tab", "log:\n\tlevel: info\n",
			[]string{`c.yml:2: invalid YAML: found character that cannot start any token`}},
		{"syntax: first line", "a: b: c\n",
			[]string{`c.yml:1: invalid YAML: mapping values are not allowed in this context`}},
		{"syntax: control character", "log:\n  level: info\n\x01\n",
			[]string{`c.yml: invalid YAML: control characters are not allowed`}},
		{"syntax: unterminated quote", "log:\n  level: \"info\n",
			[]string{`c.yml:2: invalid YAML: found unexpected end of stream`}},
		{"syntax: unknown anchor", "log: *nope\n",
			[]string{`c.yml: invalid YAML: unknown anchor 'nope' referenced`}},

		// Types.
		{"string for integer", "metrics:\n  max_series: ten\n",
			[]string{`c.yml:2:15: metrics.max_series: want an integer, got "ten"`}},
		{"float for integer", "bpf:\n  cookie_map_entries: 2048.5\n",
			[]string{`c.yml:2:23: bpf.cookie_map_entries: want an integer, got "2048.5"`}},
		{"integer overflow", "bpf:\n  cookie_map_entries: 99999999999\n",
			[]string{`c.yml:2:23: bpf.cookie_map_entries: must be between 1024 and 16777216, got 99999999999`}},
		{"negative entries", "bpf:\n  tuple_map_entries: -1\n",
			[]string{`c.yml:2:22: bpf.tuple_map_entries: must be between 1024 and 16777216, got -1`}},
		{"yes is not a bool", "bpf:\n  keep_on_exit: yes\n",
			[]string{`c.yml:2:17: bpf.keep_on_exit: want true or false, got "yes"`}},
		{"list for string", "log:\n  level: [info]\n",
			[]string{`c.yml:2:10: log.level: want a string, got a list`}},
		{"map for list", "metrics:\n  size_buckets: {a: 1}\n",
			[]string{`c.yml:2:17: metrics.size_buckets: want a list of numbers like [0.1, 0.5, 1], got a mapping`}},
		{"pin_dir climbing out of bpffs", "bpf:\n  pin_dir: /sys/fs/bpf/../../../etc\n",
			[]string{`c.yml:2:12: bpf.pin_dir: must not contain "..": "/sys/fs/bpf/../../../etc" is "/etc", which may leave the bpf filesystem; write the path it means`}},
		{"too many buckets", "metrics:\n  duration_buckets: " + seq(100000) + "\n",
			[]string{`c.yml:2:21: metrics.duration_buckets: lists 100000 boundaries, at most 64 are allowed (each one is a series per source_tag and vip)`}},
		{"bucket limit", "metrics:\n  size_buckets: " + seq(65) + "\n  duration_buckets: " + seq(64) + "\n",
			[]string{`c.yml:2:17: metrics.size_buckets: lists 65 boundaries, at most 64 are allowed (each one is a series per source_tag and vip)`}},
		{"string in buckets", "metrics:\n  duration_buckets: [0.1, 1s, 2]\n",
			[]string{`c.yml:2:27: metrics.duration_buckets[1]: want a number, got "1s"`}},
		{"duration without unit", "bindings:\n  rescan_interval: 60\n",
			[]string{`c.yml:2:20: bindings.rescan_interval: invalid duration "60": want a number with a unit, like "60s" or "5m"`}},
		{"devices is a map", "bindings:\n  devices:\n    eth1: tag1\n",
			[]string{`c.yml:3:5: bindings.devices: want a list of entries like {device: eth1, tag: transit}; got a mapping`}},
		{"device entry is a string", "bindings:\n  devices:\n    - eth1\n",
			[]string{`c.yml:3:7: bindings.devices[0]: want an entry like {device: eth1, tag: transit}; got "eth1"`}},

		// Semantics.
		{"log level", "log:\n  level: verbose\n",
			[]string{`c.yml:2:10: log.level: unknown level "verbose" (want debug, info, warn or error)`}},
		{"log format", "log:\n  format: text\n",
			[]string{`c.yml:2:11: log.format: unknown format "text" (want logfmt or json)`}},
		{"attribution mode", "attribution:\n  mode: ebpf\n",
			[]string{`c.yml:2:9: attribution.mode: unknown mode "ebpf" (want auto, bpf or fallback)`}},
		{"listen address without port", "web:\n  listen_address: 9113\n",
			[]string{`c.yml:2:19: web.listen_address: invalid address "9113": missing port in address (want host:port, e.g. ":9113" or "[::1]:9113")`}},
		{"listen address named port", "web:\n  listen_address: \"localhost:http\"\n",
			[]string{`c.yml:2:19: web.listen_address: invalid port "http" in "localhost:http" (want a number from 0 to 65535)`}},
		{"listen address port too big", "web:\n  listen_address: \":65536\"\n",
			[]string{`c.yml:2:19: web.listen_address: invalid port "65536" in ":65536" (want a number from 0 to 65535)`}},
		{"relative pin dir", "bpf:\n  pin_dir: bpf/ipng\n",
			[]string{`c.yml:2:12: bpf.pin_dir: must be an absolute path, got "bpf/ipng"`}},
		{"pin dir is bpffs root", "bpf:\n  pin_dir: /sys/fs/bpf/\n",
			[]string{`c.yml:2:12: bpf.pin_dir: must be a directory of its own below the bpf filesystem, e.g. /sys/fs/bpf/ipng-stats; got "/sys/fs/bpf/"`}},
		{"empty pin dir", "bpf:\n  pin_dir: \"\"\n",
			[]string{`c.yml:2:12: bpf.pin_dir: must not be empty (default /sys/fs/bpf/ipng-stats)`}},
		{"cgroup escapes mount", "bpf:\n  cgroup: ../../etc\n",
			[]string{`c.yml:2:11: bpf.cgroup: relative path "../../etc" leaves the cgroup2 mount (use an absolute path instead)`}},
		{"map entries too small", "bpf:\n  cookie_map_entries: 1000\n",
			[]string{`c.yml:2:23: bpf.cookie_map_entries: must be between 1024 and 16777216, got 1000`}},
		{"map entries too large", "bpf:\n  tuple_map_entries: 16777217\n",
			[]string{`c.yml:2:22: bpf.tuple_map_entries: must be between 1024 and 16777216, got 16777217`}},
		{"rescan zero", "bindings:\n  rescan_interval: 0s\n",
			[]string{`c.yml:2:20: bindings.rescan_interval: must be at least 1s, got 0s (periodic rescans cannot be turned off)`}},
		{"rescan too short", "bindings:\n  rescan_interval: 500ms\n",
			[]string{`c.yml:2:20: bindings.rescan_interval: must be at least 1s, got 500ms (periodic rescans cannot be turned off)`}},
		{"default tag", "bindings:\n  default_tag: \"-x\"\n",
			[]string{`c.yml:2:16: bindings.default_tag: invalid tag "-x": want 1-63 characters of [A-Za-z0-9_.:-], starting with a letter or digit`}},
		{"max series", "metrics:\n  max_series: 0\n",
			[]string{`c.yml:2:15: metrics.max_series: must be at least 1, got 0`}},
		{"empty buckets", "metrics:\n  size_buckets: []\n",
			[]string{`c.yml:2:17: metrics.size_buckets: must list at least one bucket boundary`}},
		{"bucket order", "metrics:\n  duration_buckets: [0.1, 0.5, 0.5, 0.2]\n",
			[]string{
				`c.yml:2:32: metrics.duration_buckets[2]: 0.5 is not greater than the previous boundary 0.5 (boundaries must be strictly increasing)`,
				`c.yml:2:37: metrics.duration_buckets[3]: 0.2 is not greater than the previous boundary 0.5 (boundaries must be strictly increasing)`,
			}},
		{"bucket values", "metrics:\n  size_buckets:\n    - 0\n    - .inf\n    - .nan\n",
			[]string{
				`c.yml:3:7: metrics.size_buckets[0]: must be greater than 0, got 0`,
				`c.yml:4:7: metrics.size_buckets[1]: must be a finite number, got +Inf (the +Inf bucket is always added)`,
				`c.yml:5:7: metrics.size_buckets[2]: must be a finite number, got NaN (the +Inf bucket is always added)`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErrors(t, tt.in, tt.want)
		})
	}
}

func TestParseDeviceErrors(t *testing.T) {
	const in = `bindings:
  devices:
    - device: eth1
      tag: tag1
    - device: eth1
      family: any
    - device: eth2
      family: ipv4
      tag: tag2-v4
    - device: eth2
      family: ipv6
      tag: tag2-v6
    - device: eth2
      family: ipv4
      tag: again
    - device: eth0.100
      family: ipv4
    - family: ipv6
      tag: orphan
    - device: averyveryverylongname0
    - device: eth3
      family: inet6
    - device: eth4
      tag: "has space"
    - device: "@x"
    - device: eth5
      tga: five
`
	checkErrors(t, in, []string{
		`c.yml:5:7: bindings.devices[1]: device "eth1" family any already bound at line 3`,
		`c.yml:13:7: bindings.devices[4]: device "eth2" family ipv4 already bound at line 7`,
		`c.yml:18:7: bindings.devices[6].device: missing (every entry needs a device name)`,
		`c.yml:20:15: bindings.devices[7].device: invalid device "averyveryverylongname0": longer than 15 characters (IFNAMSIZ)`,
		`c.yml:22:15: bindings.devices[8].family: unknown family "inet6" (want ipv4, ipv6 or any)`,
		`c.yml:24:12: bindings.devices[9].tag: invalid tag "has space": want 1-63 characters of [A-Za-z0-9_.:-], starting with a letter or digit`,
		`c.yml:25:7: bindings.devices[10].tag: not set, and the device name is not usable as one: invalid tag "@x": want 1-63 characters of [A-Za-z0-9_.:-], starting with a letter or digit; set tag explicitly`,
		`c.yml:27:7: bindings.devices[11]: unknown key "tga" (known: device, family, tag); did you mean "tag"?`,
	})
}

// TestParseManyErrors checks that decoding, structural and semantic problems
// are all reported together, in file order, and that a value which failed to
// decode is not reported a second time by validation.
func TestParseManyErrors(t *testing.T) {
	const in = `log:
  level: loud
  formt: json
web:
  listen_address: 9113
bpf:
  keep_on_exit: maybe
  cookie_map_entries: 10
metrics:
  max_series: -5
  duration_buckets: [1, x]
bindings:
  devices:
    - device: eth1
    - device: eth1
      family: [ipv4]
`
	checkErrors(t, in, []string{
		`c.yml:2:10: log.level: unknown level "loud" (want debug, info, warn or error)`,
		`c.yml:3:3: log: unknown key "formt" (known: level, format); did you mean "format"?`,
		`c.yml:5:19: web.listen_address: invalid address "9113": missing port in address (want host:port, e.g. ":9113" or "[::1]:9113")`,
		`c.yml:7:17: bpf.keep_on_exit: want true or false, got "maybe"`,
		`c.yml:8:23: bpf.cookie_map_entries: must be between 1024 and 16777216, got 10`,
		`c.yml:10:15: metrics.max_series: must be at least 1, got -5`,
		`c.yml:11:25: metrics.duration_buckets[1]: want a number, got "x"`,
		`c.yml:16:15: bindings.devices[1].family: want a string, got a list`,
	})
}

func checkErrors(t *testing.T, in string, want []string) {
	t.Helper()
	c, err := Parse([]byte(in), "c.yml")
	if err == nil {
		t.Fatalf("Parse succeeded, want errors:\n%s", strings.Join(want, "\n"))
	}
	if c != nil {
		t.Errorf("Parse returned a config with an error")
	}
	if got := strings.Split(err.Error(), "\n"); !equalStrings(got, want) {
		t.Errorf("Parse errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(Errors(err)); n != len(want) {
		t.Errorf("Errors() has %d entries, want %d", n, len(want))
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestErrorAs(t *testing.T) {
	_, err := Parse([]byte("web:\n  listen_address: x\n"), "ipng-stats.yml")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(%v) failed", err)
	}
	want := Error{File: "ipng-stats.yml", Line: 2, Column: 19, Path: "web.listen_address",
		Msg: `invalid address "x": missing port in address (want host:port, e.g. ":9113" or "[::1]:9113")`}
	if *e != want {
		t.Errorf("Error = %+v, want %+v", *e, want)
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "f.yml", Line: 3, Column: 7, Path: "a.b", Msg: "bad"}, "f.yml:3:7: a.b: bad"},
		{Error{File: "f.yml", Line: 3, Msg: "bad"}, "f.yml:3: bad"},
		{Error{File: "f.yml", Path: "a", Msg: "bad"}, "f.yml: a: bad"},
		{Error{Line: 3, Column: 7, Path: "a", Msg: "bad"}, "line 3, column 7: a: bad"},
		{Error{Line: 3, Path: "a", Msg: "bad"}, "line 3: a: bad"},
		{Error{Path: "a", Msg: "bad"}, "a: bad"},
		{Error{Msg: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"listen_address", "config_file", "log", "level"}
	tests := []struct{ in, want string }{
		{"listen_adress", "listen_address"},
		{"Listen-Address", "listen_address"},
		{"configfile", "config_file"},
		{"lgo", "log"},
		{"lvl", ""},
		{"x", ""},
		{"something_else", ""},
		{strings.Repeat("a", 100), ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.in, known); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestQuote(t *testing.T) {
	long := strings.Repeat("é", 50)
	if got, want := quote(long), `"`+strings.Repeat("é", 40)+`"...`; got != want {
		t.Errorf("quote(long) = %s, want %s", got, want)
	}
	if got := quote("a\nb"); got != `"a\nb"` {
		t.Errorf("quote = %s", got)
	}
}

// seq is the YAML flow list [1, 2, ..., n].
func seq(n int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(i))
	}
	b.WriteByte(']')
	return b.String()
}
