//go:build k8s

package k8s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// chartTool is deploy/helm/tool built by `make test-k8s` (Helm's Go API in a
// module of its own: helm stays out of the agent's go.mod).
const (
	chartTool = "../../build/ipng-stats-chart"
	chartDir  = "../../deploy/helm/ipng-stats"
)

// values are the chart values of the test: the imported image, never
// pulled; the test's cgroup directory and bpffs as the node's; the agent's
// pin dir, edge0 bound to tag, core0 to coreTag, and the proxy on the
// VIPs. Everything else is
// the chart's default.
func (c *cluster) values(image, tag string) map[string]any {
	repo, version := image, "latest"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		repo, version = image[:i], image[i+1:]
	}
	return map[string]any{
		"image":      map[string]any{"repository": repo, "tag": version, "pullPolicy": "Never"},
		"cgroupRoot": c.hostCgroup(),
		"bpffsPath":  c.bpffs(),
		"config": map[string]any{
			"bpf": map[string]any{"pin_dir": "/sys/fs/bpf/" + c.id},
			"bindings": map[string]any{"devices": []any{
				map[string]any{"device": "edge0", "tag": tag},
				map[string]any{"device": "core0", "tag": coreTag},
			}},
			"proxy": map[string]any{"enabled": true,
				"listeners": []any{
					map[string]any{"address": vip + ":8080", "upstream": "web"},
					map[string]any{"address": "[" + vip6 + "]:8080", "upstream": "web"},
				},
				"upstreams": []any{map[string]any{"name": "web", "servers": []any{"127.0.0.1:8081"}}}},
		},
	}
}

// helm runs `helm install` or `helm upgrade -f values` of the chart (the
// tool, with Helm's Go API) against the cluster's API server, from inside
// its netns.
func (c *cluster) helm(mode string, values map[string]any) string {
	c.t.Helper()
	b, err := yaml.Marshal(values)
	if err != nil {
		c.t.Fatal(err)
	}
	vf := c.write("values-"+mode+".yaml", string(b))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := c.netns.Exec(ctx, chartTool, "-chart", chartDir, "-deploy", mode,
		"-kubeconfig", c.path("kubeconfig"), "-values", vf).CombinedOutput()
	if err != nil {
		c.t.Fatalf("helm %s: %v\n%s", mode, err, out)
	}
	return strings.TrimSpace(string(out))
}

// manifestObjects are the objects of the plain manifest (the chart rendered
// with its defaults, deploy/kubernetes/ipng-stats.yaml), unchanged.
func (c *cluster) manifestObjects() []map[string]any {
	f, err := os.Open(manifestFile)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var objs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var o map[string]any
		if err := dec.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			c.t.Fatal(err)
		}
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs
}

// serverDryRun is `kubectl apply --dry-run=server -f
// deploy/kubernetes/ipng-stats.yaml`: its namespace is created for real
// (the Helm release goes into it, as the user guide says: the namespace
// first, with its Pod Security labels), every other object passes the API
// server's validation and admission with dryRun=All and is not stored.
// Then Pod Security: the agent's pod is admitted at the "privileged" level
// its namespace carries and rejected at "baseline", naming why.
func (c *cluster) serverDryRun() {
	t := c.t
	t.Helper()
	var template map[string]any
	for _, o := range c.manifestObjects() {
		p, err := resourcePath(o)
		if err != nil {
			t.Fatal(err)
		}
		if o["kind"] == "Namespace" {
			if l := field(o, "metadata", "labels", "pod-security.kubernetes.io/enforce"); l != "privileged" {
				t.Errorf("the manifest's namespace enforces %v, want privileged", l)
			}
			if _, err := c.api("POST", p, o); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if o["kind"] == "DaemonSet" {
			template, _ = field(o, "spec", "template").(map[string]any)
		}
		if _, err := c.api("POST", p+"?dryRun=All", o); err != nil {
			t.Fatalf("server-side dry-run: %v", err)
		}
		name, _ := field(o, "metadata", "name").(string)
		if _, err := c.api("GET", p+"/"+name, nil); err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("%s %s stored by a dry-run (GET: %v)", o["kind"], name, err)
		}
	}
	if template == nil {
		t.Fatal("no DaemonSet in the manifest")
	}
	pod := func(ns string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "agent-dry-run", "namespace": ns, "labels": field(template, "metadata", "labels")},
			"spec":     field(template, "spec")}
	}
	if _, err := c.api("POST", "/api/v1/namespaces/ipng-stats/pods?dryRun=All", pod("ipng-stats")); err != nil {
		t.Errorf("the agent's pod at Pod Security level privileged: %v", err)
	}
	if _, err := c.api("POST", "/api/v1/namespaces", map[string]any{"metadata": map[string]any{"name": "baseline",
		"labels": map[string]any{"pod-security.kubernetes.io/enforce": "baseline"}}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.api("POST", "/api/v1/namespaces/baseline/pods?dryRun=All", pod("baseline"))
	if err == nil {
		t.Fatal("the agent's pod was admitted at Pod Security level baseline")
	}
	msg := strings.ReplaceAll(err.Error(), `\"`, `"`) // the Status in JSON
	for _, want := range []string{`violates PodSecurity "baseline:latest"`,
		`non-default capabilities (container "agent" must not include "BPF", "NET_ADMIN", "PERFMON"`,
		"host namespaces (hostNetwork=true)", `hostPath volumes (volumes "bpffs", "cgroup")`} {
		if !strings.Contains(msg, want) {
			t.Errorf("baseline rejection does not say %q: %v", want, err)
		}
	}
	t.Logf("baseline: %v", err)
}

// agentLog is the log of the running agent container(s) as the kubelet
// keeps it (DIR/pod-logs).
func (c *cluster) agentLog(podUID string) string {
	var all []string
	files, _ := filepath.Glob(c.path("pod-logs", fmt.Sprintf("ipng-stats_*_%s", podUID), "agent", "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all = append(all, string(b))
	}
	return strings.Join(all, "")
}
