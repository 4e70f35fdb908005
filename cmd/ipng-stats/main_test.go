package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// run runs the CLI in-process and returns stdout, stderr and the exit code
// main would use.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	app := newApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(append([]string{"ipng-stats"}, args...))
	code := 0
	if err != nil {
		code = exitCode(err)
		errOut.WriteString(err.Error())
	}
	return out.String(), errOut.String(), code
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ipng-stats.yml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckInvalidConfig(t *testing.T) {
	cfg := writeFile(t, "web:\n  listen_adress: \":9113\"\nbindings:\n  devices:\n    - device: eth0\n    - device: eth0\n")
	out, _, code := run(t, "check", "--config", cfg)
	if code != checkBadConfig {
		t.Errorf("exit code %d, want %d", code, checkBadConfig)
	}
	for _, want := range []string{"FAIL  config " + cfg, cfg + ":2:3:", `unknown key "listen_adress"`, cfg + ":6:7:", "already bound at line 5"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckValidConfig(t *testing.T) {
	cfg := writeFile(t, "attribution:\n  mode: fallback\nbindings:\n  devices:\n    - device: lo\n      tag: loopback\n    - device: nosuchdev0\n")
	out, _, code := run(t, "check", "--config", cfg)
	if code != checkOK {
		t.Errorf("exit code %d, want 0:\n%s", code, out)
	}
	for _, want := range []string{"ok    config " + cfg, "ok    binding lo (any) -> loopback: ifindex 1",
		"warn  binding nosuchdev0 (any) -> nosuchdev0: no such device now", "attribution mode fallback", "all checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckWebConfig(t *testing.T) {
	bad := writeFile(t, "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n")
	out, _, code := run(t, "check", "--attribution.mode", "fallback", "--web.config.file", bad)
	if code != checkFailed || !strings.Contains(out, "FAIL  web: exporter: web config "+bad) {
		t.Errorf("exit %d:\n%s", code, out)
	}
	out, _, code = run(t, "check", "--attribution.mode", "fallback")
	if code != checkOK || !strings.Contains(out, "ok    web: metrics on :9113 (plain HTTP)") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestCheckBPF(t *testing.T) {
	testenv.RequireRoot(t)
	out, _, code := run(t, "check", "--attribution.mode", "bpf")
	if code != checkOK || !strings.Contains(out, "ok    bpf: sock_ops program loaded, attached to cgroup") {
		t.Errorf("exit code %d:\n%s", code, out)
	}
}

// TestOverridePrecedence: flag > environment > file > default.
func TestOverridePrecedence(t *testing.T) {
	cfg := writeFile(t, "attribution:\n  mode: bpf\nlog:\n  level: warn\n")
	t.Setenv("IPNG_STATS_ATTRIBUTION_MODE", "auto")
	t.Setenv("IPNG_STATS_LOG_LEVEL", "error")
	out, _, code := run(t, "check", "--config", cfg, "--attribution.mode", "fallback")
	if code != checkOK || !strings.Contains(out, "attribution mode fallback") {
		t.Errorf("flag did not win over env and file (exit %d):\n%s", code, out)
	}
	// A bad value from the environment is reported as such.
	t.Setenv("IPNG_STATS_ATTRIBUTION_MODE", "ebpf")
	out, _, code = run(t, "check", "--config", cfg)
	if code != checkBadConfig || !strings.Contains(out, "after flags and environment") || !strings.Contains(out, "ebpf") {
		t.Errorf("env override not validated (exit %d):\n%s", code, out)
	}
}

func TestConnsWithoutAgent(t *testing.T) {
	_, errOut, code := run(t, "conns", "--bpf.pin-dir", filepath.Join(t.TempDir(), "nothing"))
	if code != 1 || !strings.Contains(errOut, "is `ipng-stats agent` running") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = run(t, "conns", "-o", "yaml")
	if code != 1 || !strings.Contains(errOut, `--output "yaml": want table or json`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "ipng-stats dev (revision ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestHelpEverywhere(t *testing.T) {
	for _, cmd := range []string{"agent", "conns", "check", "detach", "version"} {
		out, _, code := run(t, cmd, "--help")
		if code != 0 || !strings.Contains(out, "USAGE") {
			t.Errorf("%s --help: exit %d\n%s", cmd, code, out)
		}
	}
}

// TestUnprivileged runs the built binary as nobody: the agent in mode bpf
// names the missing capabilities and check says it skipped BPF, or fails in
// mode bpf. (conns as nobody is tests/TestConnsCommand.)
func TestUnprivileged(t *testing.T) {
	testenv.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		testenv.Skip(t, "setpriv (util-linux) not installed")
	}
	bin := filepath.Join(t.TempDir(), "ipng-stats")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	os.Chmod(filepath.Dir(bin), 0o755)
	asNobody := func(args ...string) (string, error) {
		cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := asNobody("agent", "--attribution.mode", "bpf", "--web.listen-address", "127.0.0.1:0")
	if err == nil || !strings.Contains(out, "missing capabilities CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON") {
		t.Errorf("agent as nobody in mode bpf: %v\n%s", err, out)
	}
	out, err = asNobody("check")
	if err != nil || !strings.Contains(out, "skip  bpf: not privileged (missing CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)") {
		t.Errorf("check as nobody: %v\n%s", err, out)
	}
	out, err = asNobody("check", "--attribution.mode", "bpf")
	if code := exitStatus(err); code != checkFailed || !strings.Contains(out, "FAIL  bpf") {
		t.Errorf("check as nobody in mode bpf: exit %d\n%s", code, out)
	}
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
