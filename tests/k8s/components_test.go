//go:build k8s

package k8s

import (
	"fmt"
	"os"
	"path/filepath"
)

func (c *cluster) bin(name string) string { return filepath.Join(cacheDir(), name) }

// startEtcd runs etcd on the netns's loopback.
func (c *cluster) startEtcd() {
	c.start("etcd", "etcd", "--data-dir", c.path("etcd"), "--name", c.id,
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", c.id+"=http://127.0.0.1:2380")
}

// kubeconfig is a client configuration with the static token.
func (c *cluster) kubeconfig() string {
	return c.write("kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://%s:6443", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, c.nodeIP, c.token))
}

func (c *cluster) startAPIServer() {
	saKey := c.serviceAccountKey()
	tokens := c.write("tokens.csv", fmt.Sprintf("%s,admin,admin,\"system:masters\"\n", c.token))
	c.start("kube-apiserver", c.bin("kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", c.nodeIP, "--advertise-address", c.nodeIP, "--secure-port", "6443",
		"--cert-dir", c.path("pki"),
		"--token-auth-file", tokens,
		"--authorization-mode", "AlwaysAllow",
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-cluster-ip-range", "10.96.0.0/24",
		"--endpoint-reconciler-type", "none",
		"--allow-privileged=true")
}

func (c *cluster) startControllers(kubeconfig string) {
	c.start("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig", kubeconfig, "--leader-elect=false", "--bind-address", "127.0.0.1",
		"--service-account-private-key-file", c.path("sa.key"),
		"--root-ca-file", c.path("pki", "apiserver.crt"),
		"--use-service-account-credentials=false")
	c.start("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig", kubeconfig, "--leader-elect=false", "--bind-address", "127.0.0.1")
}

// sandboxImage is the pause image the test builds (no registry).
const sandboxImage = "docker.io/library/ipng-stats-k8s-pause:test"

func (c *cluster) containerdSock() string { return c.path("containerd", "containerd.sock") }

func (c *cluster) startContainerd() {
	c.write("cni/10-loopback.conflist", `{"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}`)
	cfg := c.write("containerd/config.toml", fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[6]q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
`, c.path("containerd", "root"), c.path("containerd", "state"), c.containerdSock(),
		c.path("containerd", "opt"), sandboxImage, c.path("cni")))
	c.start("containerd", "containerd", "--config", cfg)
}

func (c *cluster) importImage(archive string) {
	c.t.Helper()
	c.must("ctr", "--address", c.containerdSock(), "-n", "k8s.io", "images", "import", archive)
}

func (c *cluster) startKubelet(kubeconfig string) {
	cfg := c.write("kubelet/config.yaml", fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
address: %[1]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
cgroupRoot: /%[2]s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[3]s
podLogsDir: %[4]s
resolvConf: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "0%%", imagefs.available: "0%%"}
serializeImagePulls: false
`, c.nodeIP, c.cgroupName, c.containerdSock(), c.path("pod-logs")))
	if err := os.MkdirAll(c.path("pod-logs"), 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.start("kubelet", c.bin("kubelet"),
		"--config", cfg, "--kubeconfig", kubeconfig, "--root-dir", c.path("kubelet", "root"),
		"--cert-dir", c.path("kubelet", "pki"),
		"--hostname-override", c.node, "--node-ip", c.nodeIP)
}
