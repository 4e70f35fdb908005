package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ipng/ipng-stats/config"
)

var update = flag.Bool("update", false, "rewrite the golden renderings")

const chartDir = "../ipng-stats"

// Every option on: nginx ingest in another netns, the proxy, monitors, a
// hybrid-layout host, an image imported on the nodes.
func allValues() map[string]any {
	return map[string]any{
		"image":      map[string]any{"repository": "ipng-stats", "tag": "1.2.3", "pullPolicy": "Never"},
		"cgroupRoot": "/run/host-cgroup",
		"bpffsPath":  "/run/host-bpf",
		"config": map[string]any{
			"web":      map[string]any{"listen_address": ":9114"},
			"bindings": map[string]any{"devices": []any{map[string]any{"device": "gre-mg1", "tag": "maglev1"}, map[string]any{"device": "eth1", "family": "ipv6"}}},
			"nginx":    map[string]any{"enabled": true, "netns": "/run/netns/web"},
			"proxy": map[string]any{"enabled": true,
				"listeners": []any{map[string]any{"address": ":8080", "upstream": "web"}},
				"upstreams": []any{map[string]any{"name": "web", "servers": []any{"127.0.0.1:8081"}}}},
		},
		"podMonitor":     map[string]any{"enabled": true},
		"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prom"}},
	}
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s is stale: run `make chart` (or go test -update here) and review the diff", file)
	}
}

// helm lint --strict passes with the defaults and with every option on.
func TestLint(t *testing.T) {
	if err := lintChart(chartDir, nil); err != nil {
		t.Error(err)
	}
	if err := lintChart(chartDir, allValues()); err != nil {
		t.Error(err)
	}
}

// The committed plain manifest is the chart rendered with its defaults.
func TestPlainManifestGolden(t *testing.T) {
	m, err := plainManifest(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "../../kubernetes/ipng-stats.yaml", m)
}

func TestRenderAllGolden(t *testing.T) {
	m, err := render(chartDir, allValues())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/all.golden.yaml", m)
	for _, want := range []string{"- DAC_OVERRIDE", "- SYS_ADMIN", "path: /run/host-cgroup", "path: /run/host-bpf", "kind: PodMonitor",
		"kind: ServiceMonitor", "imagePullPolicy: Never", `prometheus.io/port: "9114"`, "containerPort: 9114"} {
		if !strings.Contains(m, want) {
			t.Errorf("rendering lacks %q", want)
		}
	}
}

// The agent's own parser accepts the configuration the chart renders, with
// bpf.cgroup pointing at the host's cgroup directory in the pod.
func TestRenderedConfigValid(t *testing.T) {
	for name, values := range map[string]map[string]any{"defaults": nil, "all": allValues()} {
		m, err := render(chartDir, values)
		if err != nil {
			t.Fatal(err)
		}
		var cm struct {
			Kind string            `json:"kind"`
			Data map[string]string `json:"data"`
		}
		found := false
		for _, doc := range strings.Split(m, "\n---\n") {
			if err := yaml.Unmarshal([]byte(doc), &cm); err != nil || cm.Kind != "ConfigMap" {
				continue
			}
			found = true
			cfg, err := config.Parse([]byte(cm.Data["ipng-stats.yml"]), name)
			if err != nil {
				t.Errorf("%s: the agent rejects the rendered configuration: %v\n%s", name, err, cm.Data["ipng-stats.yml"])
				continue
			}
			if cfg.BPF.Cgroup != "/host/cgroup" {
				t.Errorf("%s: bpf.cgroup %q, want /host/cgroup", name, cfg.BPF.Cgroup)
			}
		}
		if !found {
			t.Errorf("%s: no ConfigMap rendered", name)
		}
	}
}

// values.schema.json turns a mistake into an error before anything reaches
// a cluster.
func TestSchemaRejects(t *testing.T) {
	for name, c := range map[string]struct {
		values map[string]any
		want   string
	}{
		"pull policy":   {map[string]any{"image": map[string]any{"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"},
		"unknown value": {map[string]any{"cgroup2Root": "/sys/fs/cgroup"}, "cgroup2Root"},
		"bpf.cgroup":    {map[string]any{"config": map[string]any{"bpf": map[string]any{"cgroup": "/x"}}}, "bpf"},
		"family":        {map[string]any{"config": map[string]any{"bindings": map[string]any{"devices": []any{map[string]any{"device": "eth0", "family": "ip4"}}}}}, "family"},
		"relative path": {map[string]any{"cgroupRoot": "sys/fs/cgroup"}, "cgroupRoot"},
	} {
		_, err := render(chartDir, c.values)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", name, err, c.want)
		}
	}
}
