package main

import (
	"strings"
	"testing"
)

// The manual page documents every visible command and its flags, and comes
// out the same on every run (debian/rules builds it at package time).
func TestManPage(t *testing.T) {
	page, _, code := run(t, "man")
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, want := range []string{".TH ipng-stats 8", ".SH NAME", "ipng-stats \\- per-interface",
		".SH agent", ".SH check", ".SH conns", ".SH detach", ".SH proxy", ".SH nginx-snippet", ".SH version",
		"\\fB--config, -c\\fP", "\\fB--bpf.cgroup\\fP"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(page, ".SH man\n") {
		t.Error("man page documents the hidden man command")
	}
	if again, _, _ := run(t, "man"); again != page {
		t.Error("two renderings of the man page differ")
	}
}
