//go:build k8s

package k8s

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/loader"
)

// cacheDir holds the components and Prometheus built from tests/k8s/tools
// (README.md): `make test-k8s` builds them and names the directory, whose
// name is a key of the versions and the build command.
func cacheDir() string { return os.Getenv("IPNG_STATS_K8S_CACHE") }

// cluster is one single-node cluster confined to a network namespace.
type cluster struct {
	t      *testing.T
	id     string      // unique: names the netns, cgroups, pins
	dir    string      // everything on disk
	netns  *testenv.NS // the node's network namespace, named id
	nodeIP string
	node   string
	token  string
	procs  []*exec.Cmd
	names  []string // of procs, by index
	// cgroupName is the kubelet's cgroupRoot, under every hierarchy.
	cgroupName string
	// cgroup2Mount is the host's cgroup2 mount point.
	cgroup2Mount string
	sysctls      map[string]string
	// exited names the components that exited, with their error.
	mu     sync.Mutex
	exited []string
	// spawn runs functions on the spawner thread (see startProc).
	spawn chan func()
}

// Kernel-wide sysctls the kubelet sets (protectKernelDefaults false):
// recorded before and restored after.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func newCluster(t *testing.T) *cluster {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	id := "ipngk8s" + hex.EncodeToString(b)
	dir, err := os.MkdirTemp("", id+"-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, id: id, dir: dir, node: "node-" + id, cgroupName: id,
		nodeIP: fmt.Sprintf("10.%d.%d.1", 200+int(b[0])%50, b[1]), token: hex.EncodeToString(b) + "secrettoken",
		sysctls: map[string]string{}, spawn: make(chan func())}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		for f := range c.spawn {
			f()
		}
	}()
	for _, s := range kubeletSysctls {
		if v, err := os.ReadFile("/proc/sys/" + s); err == nil {
			c.sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	t.Cleanup(c.cleanup)
	if c.netns, err = testenv.CreateNS(id); err != nil {
		t.Fatal(err)
	}
	c.netns.Run(t, "link", "set", "lo", "up")
	// No dummy module on the CI host: the node's interface is one end of
	// a veth pair whose both ends stay in the netns.
	c.netns.Run(t, "link", "add", "node0", "type", "veth", "peer", "name", "node1")
	c.netns.Run(t, "addr", "add", c.nodeIP+"/24", "dev", "node0")
	c.netns.Run(t, "link", "set", "node1", "up")
	c.netns.Run(t, "link", "set", "node0", "up")
	// A default route so the kubelet finds a node address.
	c.netns.Run(t, "route", "add", "default", "dev", "node0")
	for _, h := range c.hierarchies() {
		if err := os.MkdirAll(filepath.Join(h, c.cgroupName), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if c.cgroup2Mount, err = loader.Cgroup2Mount(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) path(p ...string) string { return filepath.Join(append([]string{c.dir}, p...)...) }

func (c *cluster) must(name string, args ...string) string {
	c.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start runs a component in the netns, its output in DIR/logs/NAME.log.
func (c *cluster) start(name, bin string, args ...string) {
	c.t.Helper()
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		c.t.Fatal(err)
	}
	log, err := os.Create(c.path("logs", name+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := c.netns.Exec(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.startProc(cmd.Start); err != nil {
		c.t.Fatalf("starting %s: %v", name, err)
	}
	c.procs = append(c.procs, cmd)
	c.names = append(c.names, name)
	go func() {
		err := cmd.Wait()
		log.Close()
		c.mu.Lock()
		c.exited = append(c.exited, fmt.Sprintf("%s exited: %v", name, err))
		c.mu.Unlock()
	}()
}

// startProc calls start (exec.Cmd.Start, Cgroup.Start) on the spawner, one
// OS thread that lives until the cluster's cleanup has run. A process
// started with Pdeathsig is killed when the thread that started it ends,
// not the test process: the thread must outlive the component, and
// testenv.NS ends the threads it switches into a namespace, which may be
// any thread of the test. When the test process dies, the components die
// with it.
func (c *cluster) startProc(start func() error) error {
	errc := make(chan error, 1)
	c.spawn <- func() { errc <- start() }
	return <-errc
}

// signal sends sig to the process group of the component name.
func (c *cluster) signal(name string, sig syscall.Signal) error {
	for i, n := range c.names {
		if n == name {
			if err := syscall.Kill(-c.procs[i].Process.Pid, sig); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("no component %s", name)
}

// logTail is the end of a component's log, for failure messages.
func (c *cluster) logTail(name string, lines int) string {
	b, _ := os.ReadFile(c.path("logs", name+".log"))
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return name + ".log:\n" + strings.Join(l, "\n")
}

// waitFor polls cond (testenv.EventuallyNil) until it returns nil, and
// fails the test with cond's last error and the tails of the logs named
// when it still does not after timeout, or at once when a component has
// exited: no use waiting out the bound. Each cond is a request to a
// component (a TLS handshake with the apiserver, a scrape): they are
// spaced by pollEvery so that waiting does not load a busy machine.
func (c *cluster) waitFor(what string, timeout time.Duration, cond func() error, logs ...string) {
	c.t.Helper()
	ok := false
	defer func() {
		if ok {
			return
		}
		var tails []string
		for _, l := range logs {
			tails = append(tails, c.logTail(l, 30))
		}
		c.t.Logf("%s: logs:\n%s", what, strings.Join(tails, "\n"))
	}()
	var last time.Time
	testenv.EventuallyNil(c.t, timeout, what, func() error {
		if wait := pollEvery - time.Since(last); wait > 0 {
			time.Sleep(wait)
		}
		last = time.Now()
		err := cond()
		if err == nil {
			return nil
		}
		c.mu.Lock()
		dead := strings.Join(c.exited, "; ")
		c.mu.Unlock()
		if dead != "" {
			c.t.Fatalf("%s: %v (%s)", what, err, dead)
		}
		return err
	})
	ok = true
}

// pollEvery spaces the checks of waitFor.
const pollEvery = 250 * time.Millisecond

// hierarchies are the mounted cgroup hierarchies (v1 controllers and the
// cgroup2 one on a hybrid host).
func (c *cluster) hierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	var hs []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			// The test's own binds under its directory are no hierarchies.
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") &&
				!strings.HasPrefix(fields[4], c.dir+"/") {
				hs = append(hs, fields[4])
			}
		}
	}
	return hs
}

// mountsUnder are the mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var ms []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			ms = append(ms, f[4])
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// pidsWith are the processes whose command line mentions s (the shims name
// the cluster's containerd socket, which is under the unique directory).
func pidsWith(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killCgroupTree kills every process in the cgroup tree and removes its
// directories, deepest first.
func killCgroupTree(root string) {
	var dirs []string
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		for i := 0; i < 50; i++ {
			if err := os.Remove(d); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// cleanup undoes everything, on success and failure alike: components,
// containers and shims, mounts, cgroups, pins, sysctls, the netns, files.
func (c *cluster) cleanup() {
	t := c.t
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i].Process
		_ = syscall.Kill(-p.Pid, syscall.SIGTERM)
	}
	time.Sleep(time.Second)
	for _, cmd := range c.procs {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	for _, h := range c.hierarchies() {
		killCgroupTree(filepath.Join(h, c.cgroupName))
	}
	for _, pid := range pidsWith(c.dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsUnder(c.dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("cleanup: unmounting %s: %v", m, err)
		}
	}
	for _, h := range c.hierarchies() {
		if _, err := os.Stat(filepath.Join(h, c.cgroupName)); err == nil {
			t.Errorf("cleanup: cgroup %s left", filepath.Join(h, c.cgroupName))
		}
	}
	for s, v := range c.sysctls {
		if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
			t.Errorf("cleanup: restoring %s=%s: %v", s, v, err)
		}
	}
	t.Logf("cleanup: sysctls restored to their values before the kubelet: %v", c.sysctls)
	if c.netns != nil {
		if err := c.netns.Remove(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	close(c.spawn)
	if os.Getenv("IPNG_STATS_K8S_KEEP") != "" {
		t.Logf("keeping %s", c.dir)
		return
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// serviceAccountKey writes the key that signs service account tokens.
func (c *cluster) serviceAccountKey() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		c.t.Fatal(err)
	}
	p := c.path("sa.key")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *cluster) write(name, content string) string {
	c.t.Helper()
	p := c.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return p
}
