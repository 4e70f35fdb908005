//go:build k8s

// Package k8s is the single-node Kubernetes cluster test (make test-k8s):
// upstream components in a network namespace the test creates, the agent's
// image imported into containerd, its DaemonSet applied. See README.md.
package k8s

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ipng/ipng-stats/internal/testenv"
)

const (
	imageArchive = "../../build/ipng-stats-image.tar"
	manifestFile = "../../deploy/kubernetes/ipng-stats.yaml"
)

// imageName is the name `make image` gave the archive's image.
func imageName(t *testing.T, archive string) string {
	f, err := os.Open(archive)
	if err != nil {
		t.Fatalf("%v (run make image)", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: no index.json: %v", archive, err)
		}
		if h.Name != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			t.Fatal(err)
		}
		for _, m := range idx.Manifests {
			if n := m.Annotations["io.containerd.image.name"]; n != "" {
				return n
			}
		}
		t.Fatalf("%s: no image name", archive)
	}
}

// manifest is the plain manifest (the chart rendered with its defaults),
// pointed at the imported image, the test's cgroup2 subtree and pin dir.
func (c *cluster) manifest(image string) []map[string]any {
	f, err := os.Open(manifestFile)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var objs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			c.t.Fatal(err)
		}
		if o == nil {
			continue
		}
		switch o["kind"] {
		case "ConfigMap":
			data := o["data"].(map[string]any)
			c.chartConfig = data["ipng-stats.yml"].(string)
			data["ipng-stats.yml"] = c.agentConfig(edgeTag)
		case "DaemonSet":
			spec := field(o, "spec", "template", "spec").(map[string]any)
			ctr := spec["containers"].([]any)[0].(map[string]any)
			ctr["image"], ctr["imagePullPolicy"] = image, "Never"
			for _, v := range spec["volumes"].([]any) {
				v := v.(map[string]any)
				switch v["name"] {
				case "cgroup":
					v["hostPath"].(map[string]any)["path"] = c.hostCgroup()
				case "bpffs":
					v["hostPath"].(map[string]any)["path"] = c.bpffs()
				}
			}
		}
		objs = append(objs, o)
	}
	return objs
}

// agentConfig is the chart's default config with the test's pin dir, edge0
// bound to tag and the proxy on the VIP.
func (c *cluster) agentConfig(tag string) string {
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(c.chartConfig), &cfg); err != nil {
		c.t.Fatal(err)
	}
	cfg["bpf"].(map[string]any)["pin_dir"] = "/sys/fs/bpf/" + c.id
	cfg["bindings"].(map[string]any)["devices"] = []any{map[string]any{"device": "edge0", "tag": tag}}
	cfg["proxy"] = map[string]any{"enabled": true,
		"listeners": []any{map[string]any{"address": vip + ":8080", "upstream": "web"}},
		"upstreams": []any{map[string]any{"name": "web", "servers": []any{"127.0.0.1:8081"}}}}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(b)
}

// bpffs is the test's own bpffs instance, a shared mount (HostToContainer
// propagation needs one; the host's /sys/fs/bpf is private here) whose pins
// go with its unmount.
func (c *cluster) bpffs() string { return c.path("bpffs") }

// cgroup2 is where the agent attaches: the kubelet's cgroupRoot in the
// cgroup2 hierarchy, the test's own, which holds the pods' processes.
func (c *cluster) cgroup2() string { return c.cgroup2Mount + "/" + c.cgroupName }

// hostCgroup is the chart's cgroupRoot: a directory laid out like a
// hybrid-layout host's /sys/fs/cgroup (which this machine has), a cgroup v1
// hierarchy and the cgroup2 one as unified/, but holding the test's own
// cgroups, so that the agent attaches to them and not to the host's root.
// The agent must find unified/ itself: nothing tells it.
func (c *cluster) hostCgroup() string { return c.path("host-cgroup") }

func (c *cluster) mountHostCgroup() {
	for _, h := range c.hierarchies() {
		if h == c.cgroup2Mount {
			continue
		}
		// One v1 hierarchy beside it, as on a hybrid host.
		c.bindCgroup(h, filepath.Base(h))
		break
	}
	c.bindCgroup(c.cgroup2Mount, "unified")
}

func (c *cluster) bindCgroup(hierarchy, name string) {
	dst := filepath.Join(c.hostCgroup(), name)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.must("mount", "--bind", filepath.Join(hierarchy, c.cgroupName), dst)
}

func TestDaemonSetOnSingleNodeCluster(t *testing.T) {
	testenv.RequireRoot(t)
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"} {
		if _, err := os.Stat(filepath.Join(cacheDir(), b)); err != nil {
			t.Fatalf("%v: build the components as tests/k8s/README.md says", err)
		}
	}
	for _, b := range []string{"etcd", "containerd", "runc", "ctr", "nsenter", "bpftool"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%v (apt-get install etcd-server containerd runc bpftool)", err)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/loopback"); err != nil {
		t.Fatalf("%v (apt-get install containernetworking-plugins)", err)
	}
	image := imageName(t, imageArchive)
	c := newCluster(t)
	client := c.edge(t)
	c.upstream(t)
	if err := os.Mkdir(c.bpffs(), 0o755); err != nil {
		t.Fatal(err)
	}
	c.must("mount", "-t", "bpf", "bpf", c.bpffs())
	c.must("mount", "--make-shared", c.bpffs())
	c.mountHostCgroup()
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }

	c.startEtcd()
	c.startContainerd()
	c.startAPIServer()
	c.waitFor("apiserver ready", 3*time.Minute, func() error {
		_, err := c.api("GET", "/api/v1/namespaces/default", nil)
		return err
	}, "kube-apiserver", "etcd")
	step("apiserver ready")
	kubeconfig := c.kubeconfig()
	c.startControllers(kubeconfig)

	c.waitFor("containerd socket", time.Minute, func() error {
		_, err := os.Stat(c.containerdSock())
		return err
	}, "containerd")
	c.importImage(pauseImage(t, c.dir, sandboxImage))
	c.importImage(imageArchive)
	step("images imported")

	c.startKubelet(kubeconfig)
	c.waitFor("node Ready", 3*time.Minute, func() error {
		n, err := c.api("GET", "/api/v1/nodes/"+c.node, nil)
		if err != nil {
			return err
		}
		if s := condition(n, "Ready"); s != "True" {
			return fmt.Errorf("node Ready=%q", s)
		}
		return nil
	}, "kubelet", "containerd")
	step("node Ready")

	for _, o := range c.manifest(image) {
		p, err := resourcePath(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.api("POST", p, o); err != nil {
			t.Fatal(err)
		}
	}
	step("manifest applied")

	pod := c.readyPod("")
	step("agent pod Ready")
	if n := field(pod, "spec", "nodeName"); n != c.node {
		t.Errorf("pod on node %v, want %s", n, c.node)
	}

	// The agent attached its sock_ops program to the test's cgroup2 subtree.
	out, err := exec.Command("bpftool", "cgroup", "show", c.cgroup2()).CombinedOutput()
	if err != nil {
		t.Fatalf("bpftool cgroup show: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "sock_ops") {
		t.Errorf("no sock_ops program on %s:\n%s", c.cgroup2(), out)
	}
	step("BPF attached")

	// What a Prometheus scraping the pod (host network: the node address,
	// the chart's port) sees.
	var metrics string
	c.waitFor("metrics scrape", time.Minute, func() (err error) {
		metrics, err = c.scrape()
		return err
	})
	if !strings.Contains("\n"+metrics, "\nipng_bpf_attached 1\n") {
		t.Errorf("scrape has no `ipng_bpf_attached 1`:\n%s", metrics)
	}
	step("metrics scraped")

	c.traffic(client, edgeTag)
	step("traffic attributed")

	// A config change rolled out as the chart does it: the ConfigMap
	// changes and so does the pod template's checksum/config annotation,
	// so the DaemonSet replaces the pod; the new agent counts under the
	// new tag.
	oldUID, _ := field(pod, "metadata", "uid").(string)
	if _, err := c.api("PATCH", "/api/v1/namespaces/ipng-stats/configmaps/ipng-stats",
		map[string]any{"data": map[string]any{"ipng-stats.yml": c.agentConfig(edgeTag + "2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.api("PATCH", "/apis/apps/v1/namespaces/ipng-stats/daemonsets/ipng-stats",
		map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"annotations": map[string]any{"checksum/config": "rolled-out-by-test"}}}}}); err != nil {
		t.Fatal(err)
	}
	c.readyPod(oldUID)
	step("new agent pod Ready")
	c.traffic(client, edgeTag+"2")
	step("traffic attributed with the new config")
}

// readyPod waits for the one agent pod, Ready, other than the pod notUID.
func (c *cluster) readyPod(notUID string) map[string]any {
	var pod map[string]any
	c.waitFor("agent pod Ready", 3*time.Minute, func() error {
		l, err := c.api("GET", "/api/v1/namespaces/ipng-stats/pods", nil)
		if err != nil {
			return err
		}
		items, _ := l["items"].([]any)
		if len(items) != 1 {
			return fmt.Errorf("%d pods", len(items))
		}
		pod = items[0].(map[string]any)
		if field(pod, "metadata", "uid") == notUID {
			return fmt.Errorf("pod %s not replaced", notUID)
		}
		if s := condition(pod, "Ready"); s != "True" {
			st, _ := json.Marshal(field(pod, "status"))
			return fmt.Errorf("pod not Ready: %s", st)
		}
		return nil
	}, "kubelet", "kube-controller-manager", "kube-scheduler", "containerd")
	return pod
}

// traffic sends requests from the client netns over edge0 to the proxy on
// the VIP: each is counted once, tagged with tag.
func (c *cluster) traffic(client, tag string) {
	t := c.t
	t.Helper()
	const n = 7
	c.waitFor("proxy answers", time.Minute, func() error {
		code, err := clientGet(client, "http://"+vip+":8080/probe")
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	for i := 0; i < n; i++ {
		if code, err := clientGet(client, "http://"+vip+":8080/"); err != nil || code != 200 {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}
	want := float64(n + 1) // with the probe that answered 200
	c.waitFor("exact counts", time.Minute, func() error {
		m, err := c.scrape()
		if err != nil {
			return err
		}
		got, _ := sample(m, "ipng_requests_total", `source_tag="`+tag+`"`, `vip="`+vip+`"`, `code="2xx"`)
		var lines []string
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "ipng_requests_total{") {
				lines = append(lines, l)
			}
		}
		if got != want {
			return fmt.Errorf("ipng_requests_total{source_tag=%q,vip=%q,code=\"2xx\"} = %v, want %v; all:\n%s", tag, vip, got, want, strings.Join(lines, "\n"))
		}
		return nil
	})
}
