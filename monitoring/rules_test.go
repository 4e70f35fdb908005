package monitoring

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ipng/ipng-stats/internal/testenv"
)

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Skip(t, "promtool not installed (apt-get install prometheus)")
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestBundleUpToDate: the committed bundle is what the code generates (CI
// also runs `make check-generated`).
func TestBundleUpToDate(t *testing.T) {
	files, err := Files(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(bundleDir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is stale (%v): run `make generate` and commit", name, err)
		}
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	out := promtool(t, "check", "rules", filepath.Join(bundleDir, FileRules))
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
}

// TestPromtoolTestRules runs the alert unit tests of testdata/.
func TestPromtoolTestRules(t *testing.T) {
	promtool(t, "test", "rules", "testdata/alerts.test.yaml")
}

// TestEveryAlertTested: each alert fires in at least one promtool case and
// is checked silent in another, and its runbook section exists.
func TestEveryAlertTested(t *testing.T) {
	b, err := os.ReadFile("testdata/alerts.test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	runbook, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(runbook), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	alerts := Alerts(DefaultConfig())
	if len(alerts) < 15 {
		t.Fatalf("only %d alerts", len(alerts))
	}
	for _, r := range alerts {
		if !fires[r.Alert] || !silent[r.Alert] {
			t.Errorf("%s: fires in a test %v, silent in a test %v", r.Alert, fires[r.Alert], silent[r.Alert])
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[k] == "" {
				t.Errorf("%s has no %s", r.Alert, k)
			}
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q", r.Alert, s)
		}
		_, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "#")
		if !anchors[anchor] {
			t.Errorf("%s: docs/runbook.md has no section #%s", r.Alert, anchor)
		}
	}
}

// githubAnchor is the id GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestRecordingRuleNames: every record follows level:metric:operations.
func TestRecordingRuleNames(t *testing.T) {
	name := regexp.MustCompile(`^[a-z_]+:ipng_[a-z0-9_]+:[a-z0-9_]+$`)
	seen := map[string]bool{}
	for _, r := range RecordingRules() {
		if !name.MatchString(r.Record) {
			t.Errorf("record %q is not level:metric:operations", r.Record)
		}
		key := r.Record + r.Labels["quantile"]
		if seen[key] {
			t.Errorf("record %q twice", key)
		}
		seen[key] = true
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "m.yml")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	cfg, err := LoadConfig(write("slo: 0.995\nlatency_p99_seconds: 2\n"))
	if err != nil || cfg.SLO != 0.995 || cfg.LatencyP99Seconds != 2 || cfg.Job != "ipng-stats" {
		t.Fatalf("got %+v, %v", cfg, err)
	}
	files, err := Files(cfg)
	if err != nil || !bytes.Contains(files[FileRules], []byte("(14.4 * 0.005")) || !bytes.Contains(files[FileRules], []byte("> 2\n")) {
		t.Errorf("thresholds not applied to the alerts (%v)", err)
	}
	for _, bad := range []string{"slo: 1\n", "sloo: 0.9\n", "latency_for: soon\n", "series_cap_ratio: 2\n", "backlog_bytes: -1\n"} {
		if _, err := LoadConfig(write(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
