//go:build k8s

// Package k8s is the single-node Kubernetes cluster test (make test-k8s):
// upstream components in a network namespace the test creates, the agent's
// image imported into containerd, its DaemonSet applied. See README.md.
package k8s

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
	if cacheDir() == "" {
		t.Fatal("IPNG_STATS_K8S_CACHE is not set: run make test-k8s (tests/k8s/README.md)")
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "prometheus"} {
		if _, err := os.Stat(filepath.Join(cacheDir(), b)); err != nil {
			t.Fatalf("%v: make k8s-components builds it (tests/k8s/README.md)", err)
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
	core := c.core(t)
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

	c.serverDryRun()
	step("manifest server-side dry-run")

	t.Logf("%s", c.helm("install", c.values(image, edgeTag)))
	step("helm install")

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
	// Found by the agent in its mountinfo below the chart's /host/cgroup
	// (the hybrid layout's unified/): nothing in the config names it.
	c.waitFor("agent log", time.Minute, func() error {
		if l := c.agentLog(field(pod, "metadata", "uid").(string)); !strings.Contains(l, `"cgroup":"/host/cgroup/unified"`) {
			return fmt.Errorf("the agent did not log attaching to /host/cgroup/unified:\n%s", l)
		}
		return nil
	})
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

	c.traffic(flows(client, core, edgeTag))
	step("traffic attributed: two tags, IPv4 and IPv6")

	// A Prometheus finds the pod through the API server
	// (kubernetes_sd_configs, role pod, the chart's prometheus.io
	// annotations) and scrapes the same exact count.
	c.startPrometheus()
	c.promScraped(field(pod, "metadata", "name").(string), edgeTag, 8)
	step("Prometheus discovered and scraped the pod")

	// A server outside the agent's pod (the tag server on the node, whose
	// connections outlive the pod): a connection accepted now is stamped
	// by the agent's program with edge0's tag and counted by the agent.
	c.startTagServer(t)
	edgeIdx := int(c.netns.Ifindex(t, "edge0"))
	before := c.tagConnect(t, client)
	before.check(t, "before the roll-out", edgeIdx, edgeTag)
	c.conns("connections before the roll-out", map[string][2]float64{edgeTag: {1, 1}})
	step("tag server: connection before the roll-out stamped and counted")

	// A config change rolled out through the chart: helm upgrade with
	// edge0's tag changed; the ConfigMap and the pod template's
	// checksum/config annotation change, so the DaemonSet replaces the
	// pod. The scheduler is stopped meanwhile, so that the new pod stays
	// unbound once the old one has gone: a window with no agent on the
	// node that does not depend on timing.
	oldUID, _ := field(pod, "metadata", "uid").(string)
	if err := c.signal("kube-scheduler", syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	schedulerStopped := true
	defer func() {
		if schedulerStopped { // failed meanwhile: let the cleanup's SIGTERM work
			_ = c.signal("kube-scheduler", syscall.SIGCONT)
		}
	}()
	t.Logf("%s", c.helm("upgrade", c.values(image, edgeTag+"2")))
	step("helm upgrade")
	c.waitFor("old agent pod gone", 3*time.Minute, func() error {
		l, err := c.api("GET", "/api/v1/namespaces/ipng-stats/pods", nil)
		if err != nil {
			return err
		}
		items, _ := l["items"].([]any)
		for _, it := range items {
			p, _ := it.(map[string]any)
			if field(p, "metadata", "uid") == oldUID {
				return fmt.Errorf("old pod still there, phase %v", field(p, "status", "phase"))
			}
			if n, _ := field(p, "spec", "nodeName").(string); n != "" {
				t.Fatalf("pod %v bound to %s while the scheduler is stopped", field(p, "metadata", "name"), n)
			}
		}
		return nil
	}, "kubelet", "kube-controller-manager")
	step("old agent pod gone, new one unscheduled")
	// No agent runs: the pinned link keeps the program attached
	// (keep_on_exit, the chart's default) and stamping.
	if out, err := exec.Command("bpftool", "cgroup", "show", c.cgroup2()).CombinedOutput(); err != nil || !strings.Contains(string(out), "sock_ops") {
		t.Errorf("no sock_ops program on %s while no agent runs: %v\n%s", c.cgroup2(), err, out)
	}
	during := c.tagConnect(t, client)
	during.check(t, "while no agent runs", edgeIdx, edgeTag)
	if err := c.signal("kube-scheduler", syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	schedulerStopped = false
	step("tag server: connection while no agent runs stamped")

	pod = c.readyPod(oldUID)
	step("new agent pod Ready")
	if l := c.agentLog(field(pod, "metadata", "uid").(string)); !strings.Contains(l, `"reused_pins":true`) {
		t.Errorf("the new agent did not reuse the pinned program:\n%s", l)
	}
	// The new agent stamps with the new tag; it counts the connections
	// from the pinned in-kernel counts, each under the tag of its accept:
	// the two from before and during under the old tag, still open.
	after := c.tagConnect(t, client)
	after.check(t, "after the roll-out", edgeIdx, edgeTag+"2")
	c.conns("connections across the roll-out", map[string][2]float64{edgeTag: {2, 2}, edgeTag + "2": {1, 1}})
	for _, tc := range []*tagConn{before, during, after} {
		tc.conn.Close()
	}
	c.conns("connections closed", map[string][2]float64{edgeTag: {2, 0}, edgeTag + "2": {1, 0}})
	step("tag server: connections before, during and after counted exactly")

	c.traffic(flows(client, core, edgeTag+"2"))
	step("traffic attributed with the new config")
	c.promScraped(field(pod, "metadata", "name").(string), edgeTag+"2", 8)
	step("Prometheus discovered and scraped the new pod")
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
