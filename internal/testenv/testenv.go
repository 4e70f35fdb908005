// Package testenv is the test toolkit of ipng-stats, used by every
// package's tests:
//
//   - whether privileged tests run (RequireRoot, RequireNetns, Skip): they
//     need root (BPF, network namespaces, cgroups). Without it they skip,
//     except when IPNG_STATS_E2E=1 (set by CI and `make test-e2e`), where a
//     skip would hide a failure and is turned into one;
//   - network namespaces (NewNS, CreateNS, NS: run code, sockets and ip(8)
//     inside one) and throw-away cgroups (NewCgroup, Cgroup.Start);
//   - Eventually and EventuallyNil: wait for an observable condition with a
//     bounded deadline instead of sleeping;
//   - Samples: a Prometheus text exposition as values by label values,
//     e.g. requests per "tag vip code";
//   - golden files, web configurations with self-signed certificates,
//     Kubernetes manifests (Manifest, ManifestObject).
//
// It imports none of the project's packages, so their own tests can use
// it. Subpackages that do: topo (the six-namespace topology with a vxlan
// "load balancer" and a DSR client) and fixtures (requests per "tag vip
// code" from collector snapshots and the agent's JSON, the loopback
// attributor and collector).
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
