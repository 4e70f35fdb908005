// Package tests holds the privileged end-to-end tests of ipng-stats: real
// network namespaces (internal/testenv/topo), the real agent binary, the sock_ops
// program attached to a throw-away cgroup, and a server built on package
// attribution. Without root they skip; with IPNG_STATS_E2E=1 (CI) a skip is
// a failure.
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// agentBin is the ipng-stats binary built once for all tests.
var agentBin string

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "tagserver":
		os.Exit(tagServerMain())
	case "frontdoor":
		os.Exit(frontDoorMain())
	case "openas":
		os.Exit(openAsMain())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ipng-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // tests run the binary as nobody too
	agentBin = filepath.Join(dir, "ipng-stats")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-o", agentBin, "github.com/ipng/ipng-stats/cmd/ipng-stats")
	// As the release binary (Makefile): without cgo, so the agent can
	// drop its capabilities on every thread (internal/caps).
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building ipng-stats: %v\n", err)
		return 1
	}
	return m.Run()
}
