package config

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"gopkg.in/yaml.v3"
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

	raw, err := os.ReadFile("../deploy/kubernetes/ipng-stats.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	found := false
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kubernetes manifest: %v", err)
		}
		if doc.Kind == "ConfigMap" {
			found = true
			if _, err := Parse([]byte(doc.Data["ipng-stats.yml"]), "ConfigMap ipng-stats.yml"); err != nil {
				t.Errorf("ConfigMap: %v", err)
			}
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
