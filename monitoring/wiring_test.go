package monitoring

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ipng/ipng-stats/internal/testenv"
)

const kubeDir = "../deploy/kubernetes"

// podTemplate reads the DaemonSet's pod labels and port names.
func podTemplate(t *testing.T) (labels map[string]string, ports map[string]bool) {
	t.Helper()
	var ds struct {
		Spec struct {
			Template struct {
				Metadata struct{ Labels map[string]string }
				Spec     struct {
					Containers []struct {
						Ports []struct{ Name string }
					}
				}
			}
		}
	}
	testenv.ManifestObject(t, filepath.Join(kubeDir, "ipng-stats.yaml"), "DaemonSet", &ds)
	ports = map[string]bool{}
	for _, c := range ds.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
	}
	return ds.Spec.Template.Metadata.Labels, ports
}

// TestPodMonitorSelectsDaemonSet: the PodMonitor selects the DaemonSet's
// pods and port, and names the job the alerts select.
func TestPodMonitorSelectsDaemonSet(t *testing.T) {
	labels, ports := podTemplate(t)
	b, err := os.ReadFile(filepath.Join(kubeDir, "podmonitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pm struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string
		Spec       struct {
			JobLabel string `yaml:"jobLabel"`
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			}
			PodMetricsEndpoints []struct{ Port, Path string } `yaml:"podMetricsEndpoints"`
		}
	}
	if err := yaml.Unmarshal(b, &pm); err != nil {
		t.Fatal(err)
	}
	if pm.APIVersion != "monitoring.coreos.com/v1" || pm.Kind != "PodMonitor" {
		t.Fatalf("%s %s", pm.APIVersion, pm.Kind)
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("selector %s=%s does not match the pods' labels %v", k, v, labels)
		}
	}
	if labels[pm.Spec.JobLabel] != DefaultConfig().Job {
		t.Errorf("job label %q gives job %q, the alerts select %q", pm.Spec.JobLabel, labels[pm.Spec.JobLabel], DefaultConfig().Job)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || !ports[pm.Spec.PodMetricsEndpoints[0].Port] {
		t.Errorf("endpoints %+v, pod ports %v", pm.Spec.PodMetricsEndpoints, ports)
	}
}

// TestScrapeConfigExample: promtool accepts the plain Prometheus example
// (with its rule file), and its kubernetes_sd job keeps the DaemonSet's pods
// and port and sets the job the alerts select.
func TestScrapeConfigExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(kubeDir, "prometheus-scrape.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	var static []any
	var kube map[string]any
	for _, j := range cfg["scrape_configs"].([]any) {
		if job := j.(map[string]any); job["kubernetes_sd_configs"] != nil {
			kube = job
		} else {
			static = append(static, j)
		}
	}
	if kube == nil || len(static) != 1 {
		t.Fatalf("want one static and one kubernetes_sd job, got %v", cfg["scrape_configs"])
	}
	// Debian's promtool has no Kubernetes discovery: check the rest with it.
	cfg["scrape_configs"] = static
	dir := t.TempDir()
	out, _ := yaml.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), out, 0o644)
	rules, _ := os.ReadFile(filepath.Join(bundleDir, FileRules))
	os.WriteFile(filepath.Join(dir, "ipng-stats.rules.yaml"), rules, 0o644)
	promtool(t, "check", "config", filepath.Join(dir, "prometheus.yml"))
	if static[0].(map[string]any)["job_name"] != DefaultConfig().Job {
		t.Errorf("static job %v, the alerts select %q", static[0], DefaultConfig().Job)
	}

	labels, ports := podTemplate(t)
	keep := map[string]string{}
	job := ""
	for _, r := range kube["relabel_configs"].([]any) {
		r := r.(map[string]any)
		if r["action"] == "keep" {
			keep[r["source_labels"].([]any)[0].(string)] = r["regex"].(string)
		}
		if r["target_label"] == "job" {
			job, _ = r["replacement"].(string)
		}
	}
	if v := keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"]; v == "" || labels["app.kubernetes.io/name"] != v {
		t.Errorf("kubernetes_sd keeps app.kubernetes.io/name=%q, the pods have %v", v, labels)
	}
	if v := keep["__meta_kubernetes_pod_container_port_name"]; !ports[v] {
		t.Errorf("kubernetes_sd keeps port %q, the pods have %v", v, ports)
	}
	if job != DefaultConfig().Job {
		t.Errorf("kubernetes_sd sets job %q, the alerts select %q", job, DefaultConfig().Job)
	}
	if !strings.Contains(string(b), "ipng-stats.rules.yaml") {
		t.Error("the example does not load the rules")
	}
}
