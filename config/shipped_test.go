package config

import (
	"bytes"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestShippedConfigs: the configuration files that ship with the Debian
// package and the Kubernetes manifest are valid.
func TestShippedConfigs(t *testing.T) {
	c, err := Load("../deploy/ipng-stats.yml")
	if err != nil {
		t.Fatalf("deploy/ipng-stats.yml: %v", err)
	}
	if !c.BPF.KeepOnExit {
		t.Error("the packaged configuration must keep the program attached across restarts")
	}
	want := Default()
	want.BPF.KeepOnExit = true
	if got, _ := yaml.Marshal(c); !bytes.Equal(got, mustMarshal(t, want)) {
		t.Errorf("deploy/ipng-stats.yml differs from the defaults beyond keep_on_exit:\n%s", got)
	}

	found := false
	for _, n := range testenv.Manifest(t, "../deploy/kubernetes/ipng-stats.yaml", "ConfigMap") {
		var doc struct {
			Data map[string]string `yaml:"data"`
		}
		if err := n.Decode(&doc); err != nil {
			t.Fatalf("kubernetes manifest: %v", err)
		}
		found = true
		if _, err := Parse([]byte(doc.Data["ipng-stats.yml"]), "ConfigMap ipng-stats.yml"); err != nil {
			t.Errorf("ConfigMap: %v", err)
		}
	}
	if !found {
		t.Error("kubernetes manifest has no ConfigMap")
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
