package ipngstats_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsShowTheExample checks that the server in README.md and
// docs/user-guide.md is the compiled Example (comments aside), so the
// documented code keeps compiling.
func TestDocsShowTheExample(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)func Example\(\) \{\n(.*?)\n\}`).FindSubmatch(src)
	if m == nil {
		t.Fatal("no Example in example_test.go")
	}
	body := code(string(m[1]))
	if n := len(body); n >= 10 {
		t.Errorf("the example server is %d lines, want under 10", n)
	}
	for _, doc := range []string{"../README.md", "../docs/user-guide.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(code(string(text)), "\n"), strings.Join(body, "\n")) {
			t.Errorf("%s does not show the Example's server:\n%s", doc, strings.Join(body, "\n"))
		}
	}
}

// code returns the non-empty lines of s, trimmed, without // comments.
func code(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, " // "); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "//") {
			out = append(out, l)
		}
	}
	return out
}
