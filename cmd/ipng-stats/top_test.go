package main

import (
	"os"
	"strings"
	"testing"
)

// TestTopErrors: top says what is wrong, with exit code 1, instead of
// starting a broken UI.
func TestTopErrors(t *testing.T) {
	r, w, err := os.Pipe() // stdin is not a terminal, whatever runs the test
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	stdin := os.Stdin
	os.Stdin = r
	defer func() { os.Stdin = stdin }()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"top", "--url", "http://127.0.0.1:1"}, "top needs a terminal on standard input and output"},
		{[]string{"top", "--once", "--url", "http://127.0.0.1:1"}, "connection refused"},
		{[]string{"top", "--once", "--url", "ftp://host"}, "want http://HOST:PORT"},
		{[]string{"top", "--once", "--sort", "size"}, `unknown sort key "size"`},
		{[]string{"top", "--once", "--http.config.file", "/nonexistent.yml"}, "/nonexistent.yml"},
	} {
		_, errOut, code := run(t, tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want 1 and %q", tc.args, code, errOut, tc.want)
		}
	}
}
