package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/nginxlog"
)

// BenchmarkNginxWrk measures what the issue asks (docs/benchmarks.md): nginx
// (1 worker, `return 200`) on loopback in a private namespace and the test
// cgroup, driven by wrk (1 thread, 32 connections) for 4 s, 5 interleaved
// rounds (medians reported; ratios are medians of the per-round ratios), with `access_log off`, with the access
// log written to the spool but not read, and with the access log consumed by
// the ingest (the helper process, with the agent's
// BPF program attached). It runs once whatever b.N is; use -benchtime 1x.
//
//	go test -run '^$' -bench NginxWrk -benchtime 1x ./tests/
func BenchmarkNginxWrk(b *testing.B) {
	topo.Require(b)
	for _, bin := range []string{"nginx", "wrk"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Skip(b, bin+" not installed")
		}
	}
	tp := topo.New(b)
	cg := topo.NewCgroup(b)
	dir, err := os.MkdirTemp("/run", "ipngt-nginx-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o755)
	if err := unix.Mount("tmpfs", spool, "tmpfs", 0, "size=256m,mode=0755"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Unmount(spool, unix.MNT_DETACH) })
	logFile := filepath.Join(spool, "access.log")
	pinDir := topo.PinDir(b)
	cfg := filepath.Join(dir, "ipng-stats.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("bindings:\n  devices:\n    - device: lo\n      tag: loopback\nnginx:\n  enabled: true\n  log_file: %s\n", logFile)), 0o644)
	agentCfg := filepath.Join(dir, "agent.yml")
	os.WriteFile(agentCfg, []byte("bindings:\n  devices:\n    - device: lo\n      tag: loopback\n"), 0o644)

	bg := func(name string, cmd *exec.Cmd, inCgroup bool) *exec.Cmd {
		out, _ := os.Create(filepath.Join(dir, name+".out"))
		cmd.Stdout, cmd.Stderr, cmd.WaitDelay = out, out, time.Second
		start := cmd.Start
		if inCgroup {
			start = func() error { return cg.Start(cmd) }
		}
		if err := start(); err != nil {
			b.Fatalf("starting %s: %v", name, err)
		}
		b.Cleanup(func() {
			cmd.Process.Signal(unix.SIGTERM)
			cmd.Wait()
		})
		return cmd
	}
	bg("agent", tp.Srv.Exec(context.Background(), agentBin, "agent", "--config", agentCfg, "--bpf.cgroup", cg.Path,
		"--bpf.pin-dir", pinDir, "--attribution.mode", "bpf"), false)
	testenv.Eventually(b, 30*time.Second, func() bool { _, err := os.Stat(filepath.Join(pinDir, loader.PinTupleStamps)); return err == nil }, "agent pins")

	port, statusPort, statePort := tp.Srv.FreePort(b), tp.Srv.FreePort(b), tp.Srv.FreePort(b)
	run := func(name, accessLog string) (reqs float64, served uint64) {
		conf := filepath.Join(dir, name+".conf")
		os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 1;
user www-data;
pid %[1]s/%[2]s.pid;
events { worker_connections 1024; }
http {
  %[3]s
  %[4]s
  keepalive_requests 1000000;
  server { listen 127.0.0.1:%[5]d; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:%[6]d; access_log off; location / { stub_status; } }
}
`, dir, name, nginxlog.LogFormat(), accessLog, port, statusPort)), 0o644)
		ngx := bg("nginx-"+name, tp.Srv.Exec(context.Background(), "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;"), true)
		testenv.Eventually(b, 30*time.Second, func() bool { _, err := stubRequests(tp, statusPort); return err == nil }, "nginx")
		before, _ := stubRequests(tp, statusPort)
		out, err := tp.Srv.Exec(context.Background(), "wrk", "-t1", "-c32", "-d4s", fmt.Sprintf("http://127.0.0.1:%d/", port)).CombinedOutput()
		if err != nil {
			b.Fatalf("wrk: %v\n%s", err, out)
		}
		after, _ := stubRequests(tp, statusPort)
		m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			b.Fatalf("wrk output: %s", out)
		}
		reqs, _ = strconv.ParseFloat(string(m[1]), 64)
		ngx.Process.Signal(unix.SIGQUIT) // graceful: flushes the log buffer
		ngx.Wait()
		for pids, _ := cg.Pids(); len(pids) > 0; pids, _ = cg.Pids() {
			time.Sleep(10 * time.Millisecond)
		}
		return reqs, after - before - 1 // minus the first stub_status request
	}

	helper := helperCmd(tp.Srv, envNginxHelper+"=1", envPins+"="+pinDir, envConfig+"="+cfg, envNginxState+"="+strconv.Itoa(statePort))
	bg("helper", helper, false)
	testenv.Eventually(b, 30*time.Second, func() bool { _, err := helperState(tp, statePort); return err == nil }, "helper")
	cpu0 := procCPU(helper.Process.Pid)
	// Interleaved rounds, medians: the machine's CPUs are shared.
	var offs, ons, unread, ratios, unreadRatios []float64
	var served uint64
	for round := range 5 {
		r, _ := run("off", "access_log off;")
		offs = append(offs, r)
		unreadLog := filepath.Join(spool, "unread.log") // the log with nobody reading it
		r, _ = run("log-only", nginxlog.AccessLog(unreadLog))
		unread = append(unread, r)
		os.Remove(unreadLog)
		r, n := run("spool", nginxlog.AccessLog(logFile))
		ons = append(ons, r)
		served += n
		ratios = append(ratios, ons[round]/offs[round])
		unreadRatios = append(unreadRatios, unread[round]/offs[round])
		b.Logf("round %d: off %.0f, log unread %.0f, ingest %.0f req/s", round, offs[round], unread[round], ons[round])
	}
	off, on := median(offs), median(ons)
	var st nginxState
	testenv.Eventually(b, 30*time.Second, func() bool {
		st, err = helperState(tp, statePort)
		return err == nil && st.Stats.Lines >= served
	}, "all lines")
	cpu := procCPU(helper.Process.Pid) - cpu0
	rss := procRSS(helper.Process.Pid)
	b.ReportMetric(off, "req/s_off")
	b.ReportMetric(on, "req/s_ingest")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(median(unreadRatios), "ratio_log_unread")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(st.Stats.Lines)*1000, "agent_cpu_ms/1k_lines")
	b.ReportMetric(float64(rss)/(1<<20), "agent_rss_MiB")
	b.ReportMetric(float64(served)-float64(st.Stats.Recorded), "lines_lost")
	b.ReportMetric(float64(st.Stats.TupleMisses), "tuple_misses")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func stubRequests(tp *topo.Topo, port int) (uint64, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: tp.Srv.Dial}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	// "server accepts handled requests\n 1 1 1\n"
	f := strings.Fields(strings.SplitN(string(body), "\n", 4)[2])
	if len(f) != 3 {
		return 0, fmt.Errorf("stub_status: %q", body)
	}
	return strconv.ParseUint(f[2], 10, 64)
}

func helperState(tp *topo.Topo, port int) (nginxState, error) {
	n := &nginxEnv{env: &env{topo: tp}, statePort: port}
	return n.state()
}

func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func procRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
