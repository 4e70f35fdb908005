// Package testenv decides whether privileged tests run: they need root (BPF,
// network namespaces, cgroups). Without it they skip, except when
// IPNG_STATS_E2E=1 (set by CI), where a skip would hide a failure and is
// turned into one.
package testenv

import (
	"os"
	"testing"
)

// E2E reports whether IPNG_STATS_E2E=1 is set.
func E2E() bool { return os.Getenv("IPNG_STATS_E2E") == "1" }

// RequireRoot skips the test unless it runs as root; under IPNG_STATS_E2E=1
// it fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	Skip(t, "needs root (BPF, network namespaces, cgroups)")
}

// Skip skips, or fails under IPNG_STATS_E2E=1.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if E2E() {
		t.Fatalf("IPNG_STATS_E2E=1 but the test cannot run: %s", reason)
	}
	t.Skip(reason)
}
