package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/node"
)

// badConfig is a --config that check, the agent's start and a SIGHUP reload
// must all refuse with the same message.
type badConfig struct {
	name, path, want string
}

// badConfigs returns the files every entry point must refuse.
func badConfigs(t *testing.T) []badConfig {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#\n"), config.MaxFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	var buckets strings.Builder
	buckets.WriteString("metrics:\n  duration_buckets: [1")
	for i := 2; i <= 100000; i++ {
		fmt.Fprintf(&buckets, ", %d", i)
	}
	buckets.WriteString("]\n")
	many := filepath.Join(dir, "buckets.yml")
	if err := os.WriteFile(many, []byte(buckets.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return []badConfig{
		{"100000-buckets", many, many + ":2:21: metrics.duration_buckets: lists 100000 boundaries, at most 64 are allowed"},
		{"fifo", fifo, fifo + " is a FIFO, not a regular file"},
		{"dev-zero", "/dev/zero", "/dev/zero is a character device, not a regular file"},
		{"directory", dir, dir + " is a directory, not a regular file"},
		{"too-big", big, "larger than the 1048576 bytes (1 MiB) a configuration file may have"},
	}
}

// within runs fn and fails the test if it has not returned after a bound far
// above its normal run time (a FIFO used to block forever).
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after 30s", what)
	}
}

// TestBadConfigRefusedEverywhere: check, agent start and SIGHUP reload
// refuse the same files with the same message, and none of them hangs.
func TestBadConfigRefusedEverywhere(t *testing.T) {
	for _, bc := range badConfigs(t) {
		t.Run(bc.name, func(t *testing.T) {
			t.Run("check", func(t *testing.T) {
				var out string
				var code int
				within(t, "check", func() { out, _, code = run(t, "check", "--config", bc.path) })
				if code != checkBadConfig || !strings.Contains(out, "FAIL  config") || !strings.Contains(out, bc.want) {
					t.Errorf("check exit %d, want %d and %q in:\n%s", code, checkBadConfig, bc.want, out)
				}
			})
			t.Run("agent", func(t *testing.T) {
				var errOut string
				var code int
				within(t, "agent", func() { _, errOut, code = run(t, "agent", "--config", bc.path) })
				if code == 0 || !strings.Contains(errOut, bc.want) {
					t.Errorf("agent exit %d, want an error containing %q:\n%s", code, bc.want, errOut)
				}
			})
			t.Run("reload", func(t *testing.T) {
				if refusal := reloadWith(t, bc.path); !strings.Contains(refusal, bc.want) {
					t.Errorf("reload of %s refused with %q, want a refusal containing %q", bc.path, refusal, bc.want)
				}
			})
		})
	}
}

// TestReloadRefusesBadWebConfig: the start refuses a web.config_file that
// exporter-toolkit cannot use; a reload to it is refused with the same
// message instead of being accepted until the next restart fails.
func TestReloadRefusesBadWebConfig(t *testing.T) {
	web := writeFile(t, "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n")
	cfg := writeFile(t, "web:\n  config_file: "+web+"\n")
	want := "exporter: web config " + web + ":"
	if refusal := reloadWith(t, cfg); !strings.Contains(refusal, want) {
		t.Errorf("reload refusal %q, want one containing %q", refusal, want)
	}
	// The agent's start says the same (through exporter.New).
	if _, err := exporter.New(exporter.Options{WebConfigFile: web, Collector: newTestCollector(t)}); err == nil ||
		!strings.Contains(err.Error(), want) {
		t.Errorf("exporter.New = %v, want %q", err, want)
	}
}

// reloadWith checks --config path as the SIGHUP reload of the agent and
// proxy commands does (node.Check, through loadConfig, before anything is
// applied). It returns the refusal, "" when the file is accepted.
func reloadWith(t *testing.T, path string) string {
	t.Helper()
	var refusal string
	app := &cli.App{Flags: configFlags(), Action: func(c *cli.Context) error {
		within(t, "reload", func() {
			if _, _, err := node.Check(func() (*config.Config, error) { return loadConfig(c) }); err != nil {
				refusal = err.Error()
			}
		})
		return nil
	}}
	if err := app.Run([]string{"reload-test", "--config", path}); err != nil {
		t.Fatal(err)
	}
	return refusal
}

func newTestCollector(t *testing.T) *collector.Collector {
	t.Helper()
	col, err := collector.New(node.CollectorConfig(config.Default()), collector.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return col
}

// TestAgentNginxNeedsBPF: in mode auto the agent runs on without the BPF
// program, but not with the nginx ingest, which attributes by the program's
// 4-tuple stamps only: it refuses to start and says why, instead of tagging
// every nginx request with the default tag.
func TestAgentNginxNeedsBPF(t *testing.T) {
	cfg := writeFile(t, "attribution:\n  mode: auto\nnginx:\n  enabled: true\n  log_file: "+filepath.Join(t.TempDir(), "access.log")+"\n")
	var errOut string
	var code int
	within(t, "agent", func() {
		_, errOut, code = run(t, "agent", "--config", cfg, "--bpf.cgroup", t.TempDir(), "--web.listen-address", "127.0.0.1:0")
	})
	if code == 0 || !strings.Contains(errOut, "the nginx ingest needs the BPF program") {
		t.Errorf("agent exit %d, want an error naming the nginx ingest's need for BPF:\n%s", code, errOut)
	}
}
