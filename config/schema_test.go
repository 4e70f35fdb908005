package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
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
