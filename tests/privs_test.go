package tests

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/caps"
	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/nginxlog"
)

// systemUID is the uid and gid the tests run the agent as, standing in for
// the Debian package's system user ipng-stats (setpriv takes numbers: no
// passwd entry is needed, and none may exist).
const systemUID = 61414

// unitCapMask is the mask of the shipped unit's capabilities (unitCaps).
func unitCapMask(t *testing.T) uint64 {
	t.Helper()
	bits := map[string]caps.Cap{"CAP_BPF": unix.CAP_BPF, "CAP_PERFMON": unix.CAP_PERFMON, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
		"CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_FOWNER": unix.CAP_FOWNER, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH, "CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE}
	var list []caps.Cap
	for _, c := range unitCaps(t) {
		b, ok := bits[c]
		if !ok {
			t.Fatalf("the unit grants %s, which this test does not know", c)
		}
		list = append(list, b)
	}
	return caps.Mask(list)
}

// asSystemUser is the wrapper that runs the agent as the shipped
// ipng-stats.service does: as systemUID, no supplementary group, the
// unit's capabilities (unitCaps) as ambient ones and nothing else in the
// bounding set.
func asSystemUser(t *testing.T) []string {
	t.Helper()
	if u, err := user.LookupId(strconv.Itoa(systemUID)); err == nil {
		t.Fatalf("uid %d is taken on this machine (%s): the test needs an unused one", systemUID, u.Username)
	}
	set := "-all"
	for _, c := range unitCaps(t) {
		set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	id := strconv.Itoa(systemUID)
	return []string{"/usr/bin/setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, "--"}
}

// asUser runs a command as uid:gid with the supplementary groups given and
// no capability.
func asUser(uid, gid int, groups ...int) []string {
	g := "--clear-groups"
	if len(groups) > 0 {
		s := make([]string, len(groups))
		for i, x := range groups {
			s[i] = strconv.Itoa(x)
		}
		g = "--groups=" + strings.Join(s, ",")
	}
	return []string{"/usr/bin/setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), g, "--inh-caps=-all", "--"}
}

// pinGroup is the group of the pin directory: the group whose members
// read the pins.
func pinGroup(t *testing.T, dir string) int {
	t.Helper()
	return int(statOf(t, dir).Gid)
}

func statOf(t *testing.T, path string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// checkOwner checks path's mode (permission and special bits), owner and
// group.
func checkOwner(t *testing.T, path string, mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	got := fi.Mode() &^ os.ModeType
	if got != mode || int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", path, got, st.Uid, st.Gid, mode, uid, gid)
	}
}

// handPinDir creates the pin directory for systemUID as the unit's
// ExecStartPre does (install -d -o ipng-stats -g ipng-stats).
func handPinDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, systemUID, systemUID); err != nil {
		t.Fatal(err)
	}
}

func lookupGid(t *testing.T, name string) int {
	t.Helper()
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Fatalf("group %s: %v", name, err)
	}
	id, _ := strconv.Atoi(g.Gid)
	return id
}

// shippedSpool gives the nginx test environment's spool directory the
// shipped mount unit's owner and mode (root, group www-data, 0710) and
// returns nginx's www-data gid and uid.
func shippedSpool(t *testing.T, n *nginxEnv) (gid, uid int) {
	t.Helper()
	gid = lookupGid(t, "www-data")
	u, err := user.Lookup("www-data")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	if err := os.Chown(n.spool, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(n.spool, 0o710); err != nil {
		t.Fatal(err)
	}
	return gid, uid
}

// access is what openAs reports per path: whether it could be opened for
// reading and for writing.
type access struct{ Read, Write bool }

const envOpenAs = "IPNG_E2E_OPEN_AS" // the paths openAsMain tries, newline separated

// openAsMain is the helper run by openAs: it opens each path for reading
// and for writing (a pinned map by bpf(2), read-only and write-only; a
// file by open(2), without creating it) and prints what was allowed as
// JSON. Only a refusal for permission counts as not allowed.
func openAsMain() int {
	res := map[string]access{}
	for _, p := range strings.Split(os.Getenv(envOpenAs), "\n") {
		var st unix.Statfs_t
		onBPFFS := unix.Statfs(filepath.Dir(p), &st) == nil && st.Type == unix.BPF_FS_MAGIC
		try := func(write bool) bool {
			var err error
			if onBPFFS {
				var m *ebpf.Map
				m, err = ebpf.LoadPinnedMap(p, &ebpf.LoadPinOptions{ReadOnly: !write, WriteOnly: write})
				if err == nil {
					m.Close()
				}
			} else {
				flag := os.O_RDONLY
				if write {
					flag = os.O_WRONLY | os.O_APPEND
				}
				var f *os.File
				f, err = os.OpenFile(p, flag, 0)
				if err == nil {
					f.Close()
				}
			}
			return !errors.Is(err, os.ErrPermission)
		}
		res[p] = access{Read: try(false), Write: try(true)}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// openAs runs openAsMain as cred (set with setuid in the child) on paths.
// The test binary is copied where any user may run it.
func openAs(t *testing.T, cred *syscall.Credential, paths ...string) map[string]access {
	t.Helper()
	bin := publicCopy(t)
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=openas", envOpenAs+"="+strings.Join(paths, "\n"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("open as %d:%d %v: %v", cred.Uid, cred.Gid, cred.Groups, err)
	}
	res := map[string]access{}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("open as %d: %v\n%s", cred.Uid, err, out)
	}
	return res
}

// publicCopy copies the test binary into a directory every user may
// search (go test's build directory is root's, mode 0700).
func publicCopy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "openas")
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestModesAsSystemUser runs the agent as the Debian unit does (the system
// user, the unit's ambient capabilities, the spool on a tmpfs of mode 0710
// with nginx's group as run-ipng\x2dstats-nginx.mount mounts it) with nginx
// (workers as www-data) writing its access log, and checks what is on
// disk: the pin directory 0750 and the maps 0640 of the agent's user and
// group, the link 0600, the spool file 0600. nginx still writes the log
// (and reopens it as www-data: its master hands the file over, the mode
// stays); the agent counts every request; `conns` works as root and as a
// member of the pins' group. A user outside the group (nobody, or nginx's
// www-data) can neither read nor write a pin nor the spool, and a member
// of the group cannot write the maps nor open the link.
func TestModesAsSystemUser(t *testing.T) {
	n := setupNginxEnv(t, 1, "")
	www, wwwUID := shippedSpool(t, n)
	a := &ingestAgent{n: n, cfg: filepath.Join(n.dir, "agent-nginx.yml"), pins: topo.PinDir(t), wrap: asSystemUser(t)}
	handPinDir(t, a.pins)
	a.writeConfig(bindingsYAML)
	a.start()
	checkThreadCapSets(t, a.proc, caps.Mask([]caps.Cap{unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER, unix.CAP_NET_ADMIN, unix.CAP_BPF})|bpfCapNeeded(t), unitCapMask(t))

	// What the agent made, before nginx opened anything.
	checkOwner(t, a.pins, loader.PinDirMode, systemUID, systemUID)
	entries, err := os.ReadDir(a.pins)
	if err != nil || len(entries) < 2 {
		t.Fatalf("pins: %v %v", entries, err)
	}
	var pins, maps []string
	for _, de := range entries {
		p := filepath.Join(a.pins, de.Name())
		pins = append(pins, p)
		mode := loader.PinMapMode
		if de.Name() == loader.PinLink {
			mode = loader.PinLinkMode
		} else {
			maps = append(maps, p)
		}
		checkOwner(t, p, mode, systemUID, systemUID)
	}
	if len(maps) == len(pins) {
		t.Fatalf("no link pinned in %s: %v", a.pins, pins)
	}
	checkOwner(t, n.logFile, nginxlog.SpoolFileMode, systemUID, systemUID)

	n.startNginx()
	want := map[string]uint64{}
	send := func(k int) {
		t.Helper()
		cl := n.client(paths[0].ns(n.topo), "ipv4", n.port)
		for range k {
			if err := cl.get(200); err != nil {
				t.Fatal(err)
			}
			want[expectedTag(paths[0].dev, "ipv4")+" "+n.vipLabel("ipv4")+" 2xx"]++
		}
	}
	send(5)
	a.waitRequests("as the system user", want)

	// nginx -s reopen: the master hands the file to www-data and the
	// worker reopens it by path, through the 0710 directory.
	errLog := filepath.Join(n.dir, "error.log")
	before := countIn(t, errLog, "reopening logs")
	n.signalNginx("reopen")
	testenv.Eventually(t, 20*time.Second, func() bool {
		// the master's line and the worker's
		return countIn(t, errLog, "reopening logs") >= before+2
	}, "nginx reopened its logs")
	checkOwner(t, n.logFile, nginxlog.SpoolFileMode, wwwUID, systemUID)
	send(7)
	a.waitRequests("after nginx -s reopen", want)
	if b, _ := os.ReadFile(errLog); strings.Contains(string(b), "Permission denied") || strings.Contains(string(b), "[crit]") {
		t.Errorf("nginx could not write or reopen its log:\n%s", b)
	}

	// conns: root, and nobody in the pins' group; not nobody alone.
	held := n.client(paths[0].ns(n.topo), "ipv4", n.port)
	if err := held.get(200); err != nil {
		t.Fatal(err)
	}
	want[expectedTag(paths[0].dev, "ipv4")+" "+n.vipLabel("ipv4")+" 2xx"]++
	for _, wrap := range [][]string{nil, asUser(65534, 65534, systemUID)} {
		rows := n.conns(t, a.cfg, a.pins, wrap)
		for _, r := range rows {
			if r.SourceTag != "tag1" || r.Device != "eth1" {
				t.Errorf("conns through %v: %+v, want tag1 on eth1", wrap, r)
			}
		}
		if len(rows) == 0 {
			t.Errorf("conns through %v: no connection, want the kept-alive ones", wrap)
		}
	}
	out, err := n.ipngStats(wrapped(asUser(65534, 65534), agentBin, []string{"conns", "--config", a.cfg, "--bpf.pin-dir", a.pins})...)
	if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), fmt.Sprintf("members of group %d", systemUID)) {
		t.Errorf("conns as nobody outside the pins' group: %v\n%s", err, out)
	}

	// What each user may open, from a child process set to its uid.
	targets := append(append([]string{}, pins...), n.logFile)
	for _, c := range []struct {
		name string
		cred *syscall.Credential
		want func(p string) access
	}{
		{"nobody", &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}, func(string) access { return access{} }},
		{"www-data (nginx's workers)", &syscall.Credential{Uid: uint32(wwwUID), Gid: uint32(www), Groups: []uint32{}}, func(p string) access {
			if p == n.logFile {
				return access{Read: true, Write: true} // the owner since the reopen
			}
			return access{}
		}},
		{"nobody in the pins' group", &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{systemUID}}, func(p string) access {
			if filepath.Dir(p) == a.pins && filepath.Base(p) != loader.PinLink {
				return access{Read: true}
			}
			return access{}
		}},
	} {
		got := openAs(t, c.cred, targets...)
		for _, p := range targets {
			if got[p] != c.want(p) {
				t.Errorf("%s opening %s: %+v, want %+v", c.name, p, got[p], c.want(p))
			}
		}
	}
	a.waitRequests("at the end", want)
}

// TestSpoolNginxFirstAsSystemUser: nginx runs before the agent, so its
// master (root) creates the spool file with its own mode (0644 under the
// usual umask). The agent, run as the shipped unit runs it (the unit's
// capabilities, CAP_FOWNER among them), narrows the file to 0600 when it
// takes it over, without re-creating it: nginx's worker keeps writing
// through the descriptor it inherited, and every request is counted
// exactly once. The same after `nginx -s reopen` (the master hands the
// file to www-data, leaving the mode) and after a rename-style rotation
// (the master creates the file again, 0644, and the agent narrows the new
// one). Nobody else can open it; nginx logs no permission error.
func TestSpoolNginxFirstAsSystemUser(t *testing.T) {
	n := setupNginxEnv(t, 1, "")
	www, wwwUID := shippedSpool(t, n)
	n.startNginx()
	fi, err := os.Stat(n.logFile)
	if err != nil {
		t.Fatalf("nginx did not create its access log: %v", err)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		t.Fatalf("nginx created %s with mode %v: nothing to narrow (umask?)", n.logFile, fi.Mode())
	}
	nginxMode := fi.Mode().Perm()

	a := &ingestAgent{n: n, cfg: filepath.Join(n.dir, "agent-nginx.yml"), pins: topo.PinDir(t), wrap: asSystemUser(t)}
	handPinDir(t, a.pins)
	a.writeConfig(bindingsYAML)
	a.start()
	narrowed := func() bool {
		fi, err := os.Stat(n.logFile)
		return err == nil && fi.Mode().Perm() == 0o600
	}
	testenv.Eventually(t, 20*time.Second, narrowed, "the spool file nginx created narrowed")
	checkOwner(t, n.logFile, 0o600, 0, 0)

	// Connections made once the program is attached (their lines get
	// their tags); one kept alive throughout: the worker's descriptor
	// opened before the narrowing.
	want := map[string]uint64{}
	key := expectedTag(paths[0].dev, "ipv4") + " " + n.vipLabel("ipv4") + " 2xx"
	cl := n.clientKeepAlive(paths[0].ns(n.topo), "ipv4", n.port, true)
	send := func(k int) {
		t.Helper()
		for range k {
			if err := cl.get(200); err != nil {
				t.Fatal(err)
			}
			want[key]++
		}
	}
	send(5)
	a.waitRequests("after the narrowing", want)

	errLog := filepath.Join(n.dir, "error.log")
	reopen := func() {
		t.Helper()
		before := countIn(t, errLog, "reopening logs")
		n.signalNginx("reopen")
		testenv.Eventually(t, 20*time.Second, func() bool { return countIn(t, errLog, "reopening logs") >= before+2 }, "nginx reopened its logs")
	}
	reopen()
	checkOwner(t, n.logFile, 0o600, wwwUID, 0)
	send(7)
	a.waitRequests("after nginx -s reopen", want)

	// Rotation: the master creates the file again with its own mode.
	if err := os.Rename(n.logFile, n.logFile+".1"); err != nil {
		t.Fatal(err)
	}
	reopen()
	send(9)
	a.waitRequests("after a rotation", want)
	testenv.Eventually(t, 20*time.Second, narrowed, "the re-created spool file narrowed")
	checkOwner(t, n.logFile, 0o600, wwwUID, 0)
	if got := strings.Count(a.proc.out.String(), `msg="spool file narrowed to its owner"`); got != 2 {
		t.Errorf("agent logged %d narrowings, want 2 (at start, after the rotation):\n%s", got, a.proc.out.String())
	}
	if !strings.Contains(a.proc.out.String(), fmt.Sprintf("from=%04o to=0600", nginxMode)) {
		t.Errorf("agent log does not say it narrowed %04o to 0600:\n%s", nginxMode, a.proc.out.String())
	}
	if strings.Contains(a.proc.out.String(), "cannot be narrowed") {
		t.Errorf("agent could not narrow the spool file:\n%s", a.proc.out.String())
	}
	if b, _ := os.ReadFile(errLog); strings.Contains(string(b), "Permission denied") || strings.Contains(string(b), "[crit]") {
		t.Errorf("nginx could not write or reopen its log:\n%s", b)
	}
	got := openAs(t, &syscall.Credential{Uid: 65534, Gid: uint32(www), Groups: []uint32{}}, n.logFile)
	if got[n.logFile] != (access{}) {
		t.Errorf("nobody in nginx's group opening %s: %+v, want nothing", n.logFile, got[n.logFile])
	}
	send(1)
	a.waitRequests("at the end", want)
}

// countIn counts the lines of file that contain s.
func countIn(t *testing.T, file, s string) int {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0
		}
		t.Fatal(err)
	}
	defer f.Close()
	k := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			k++
		}
	}
	return k
}

// tlsScraper scrapes the agent's metrics port over TLS inside srv's
// namespace, trusting only the certificate given.
type tlsScraper struct {
	e    *env
	cert []byte
}

// get GETs path with user:pass ("" user: no credentials) on a new
// connection and returns the status and body.
func (s tlsScraper) get(scheme, path, user, pass string) (int, string, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.cert)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: s.e.topo.Srv.Dial,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
	req, err := http.NewRequest(http.MethodGet, scheme+"://127.0.0.1:9113"+path, nil)
	if err != nil {
		return 0, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// check asserts what a scraper sees: alice's password gets the JSON
// document with the connections counted so far (want), a wrong password
// or none gets 401, plain HTTP gets no document.
func (s tlsScraper) check(t *testing.T, step string, want map[string]uint64) {
	t.Helper()
	fixtures.WaitCounts(t, 20*time.Second, step+": connections over TLS with the password", func() (map[string]uint64, error) {
		code, body, err := s.get("https", "/.well-known/ipng/statsz?format=json", "alice", "secret")
		if err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("%d %v %.200s", code, err, body)
		}
		var doc exporter.Document
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			return nil, err
		}
		total, _ := fixtures.DocConnections(&doc)
		return total, nil
	}, want)
	for _, c := range []struct{ user, pass string }{{"alice", "wrong"}, {"mallory", "secret"}, {"", ""}} {
		if code, body, err := s.get("https", "/metrics", c.user, c.pass); err != nil || code != http.StatusUnauthorized || strings.Contains(body, "ipng_") {
			t.Errorf("%s: /metrics as %q/%q: %d %v %.200s, want 401", step, c.user, c.pass, code, err, body)
		}
	}
	if code, body, err := s.get("http", "/metrics", "alice", "secret"); err != nil || code != http.StatusBadRequest || strings.Contains(body, "ipng_") {
		t.Errorf("%s: plain HTTP with the password: %d %.200s, want 400 and no metrics", step, code, body)
	}
}

// TestScrapeTLSAfterDrop: the agent as the system user with the unit's
// capabilities, TLS and basic auth on its metrics port. After the drop it
// keeps CAP_NET_ADMIN and CAP_BPF only (the handshake programs), no
// CAP_DAC_*: it reads the web configuration, certificate and key as its
// user (root:ipng-stats, 0640, as the user guide says). Scrapes with the
// password get the counted connections, others 401, plain HTTP 400; a
// renewed certificate and a SIGHUP reload work with the reduced set, and
// the same holds after.
func TestScrapeTLSAfterDrop(t *testing.T) {
	e := newEnv(t, "")
	webCfg, cert := testenv.WebConfig(t, true)
	dir := filepath.Dir(webCfg)
	os.Chmod(filepath.Dir(dir), 0o755)
	for _, p := range []string{dir, webCfg, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")} {
		mode := os.FileMode(0o640)
		if p == dir {
			mode = 0o750
		}
		if err := os.Chown(p, 0, systemUID); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	handPinDir(t, e.pinDir)
	e.agentWrap = asSystemUser(t)
	agent := e.startAgent("--web.config.file", webCfg)
	wantCaps := caps.Mask([]caps.Cap{unix.CAP_NET_ADMIN, unix.CAP_BPF}) | bpfCapNeeded(t)
	checkThreadCapSets(t, agent, wantCaps, unitCapMask(t))

	e.startTagServer("fallback") // the counts are the agent's own
	want := map[string]uint64{}
	connect := func(k int) {
		t.Helper()
		e.connectClose(t, e.topo.C1, "ipv4", k)
		want["tag1 "+e.topo.VIP4.String()] += uint64(k)
	}
	connect(3)
	s := tlsScraper{e: e, cert: cert}
	s.check(t, "after the drop", want)

	// A renewed certificate and key (root:ipng-stats 0640, written in
	// place), then SIGHUP: the agent reads them with what it kept.
	newCert, newKey := testenv.SelfSigned(t, []string{"127.0.0.1"}, net.IPv4(127, 0, 0, 1))
	for name, b := range map[string][]byte{"cert.pem": newCert, "key.pem": newKey} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	reloads := strings.Count(agent.out.String(), "configuration reloaded")
	agent.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Eventually(t, 20*time.Second, func() bool {
		return strings.Count(agent.out.String(), "configuration reloaded") > reloads
	}, "reload")
	if _, _, err := s.get("https", "/metrics", "alice", "secret"); err == nil {
		t.Error("the old certificate is still served after the renewal and reload")
	}
	s.cert = newCert
	connect(2)
	s.check(t, "after the reload with a renewed certificate", want)
	checkThreadCapSets(t, agent, wantCaps, unitCapMask(t))
	if out := agent.out.String(); strings.Contains(out, "level=ERROR") {
		t.Errorf("errors in the agent's log:\n%s", out)
	}
}
