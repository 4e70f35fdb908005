package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// checkYAML enables the proxy with one listener on %LISTEN%.
const checkYAML = `
proxy:
  enabled: true
  listeners:
    - address: "%LISTEN%"
      upstream: web
  upstreams:
    - name: web
      servers: ["127.0.0.1:8080"]
`

// TestProxyCheckListeners: `ipng-stats check` binds every proxy listener
// and the metrics address: a free one is ok, one held by another process
// fails with who holds it, :80 without CAP_NET_BIND_SERVICE fails saying
// so, each with exit status 2.
func TestProxyCheckListeners(t *testing.T) {
	e := newEnv(t, "")
	web := e.distinctPorts(1, e.port)[0]
	held, err := e.topo.Srv.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	me, _ := os.ReadFile("/proc/self/comm")
	for _, tc := range []struct {
		name, listen string
		caps         []string // run with only these capabilities
		nobody       bool
		code         int
		want         string
	}{
		{"systemd unit", ":80", unitCaps(t), false, 0, "ok    proxy listener :80: can be bound"},
		{"kubernetes", ":80", daemonSetCaps(t, "../deploy/helm/tool/testdata/all.golden.yaml"), false, 0, "ok    proxy listener :80: can be bound"},
		{"free", fmt.Sprintf(":%d", e.port), nil, false, 0, fmt.Sprintf("ok    proxy listener :%d: can be bound", e.port)},
		{"in use", held.Addr().String(), nil, false, 2,
			fmt.Sprintf("FAIL  proxy listener %s: address in use by %s (pid %d)", held.Addr(), strings.TrimSpace(string(me)), os.Getpid())},
		{"privileged port", ":80", nil, true, 2,
			"FAIL  proxy listener :80: permission denied: ports below 1024 (net.ipv4.ip_unprivileged_port_start) need CAP_NET_BIND_SERVICE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(e.cfgPath, []byte(bindingsYAML+strings.ReplaceAll(checkYAML, "%LISTEN%", tc.listen)), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{agentBin, "check", "--config", e.cfgPath, "--attribution.mode", "fallback",
				"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", web)}
			if tc.caps != nil {
				bounding := "-all"
				for _, c := range tc.caps {
					bounding += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
				}
				args = append([]string{"/usr/bin/setpriv", "--bounding-set=" + bounding, "--"}, args...)
			}
			if tc.nobody {
				args = append([]string{"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"}, args...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := e.topo.Srv.Exec(ctx, args[0], args[1:]...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(out.String(), tc.want+"\n") {
				t.Errorf("exit status %d (want %d), output lacks %q:\n%s", code, tc.code, tc.want, out.String())
			}
			if want := fmt.Sprintf("ok    web 127.0.0.1:%d: can be bound", web); !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		})
	}
}

// unitCaps returns the CapabilityBoundingSet of the shipped systemd unit:
// the union of its lines, as systemd reads them.
func unitCaps(t *testing.T) []string {
	b, err := os.ReadFile("../deploy/systemd/ipng-stats.service")
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			caps = append(caps, strings.Fields(v)...)
		}
	}
	if len(caps) == 0 {
		t.Fatal("the unit has no CapabilityBoundingSet")
	}
	return caps
}

// daemonSetCaps returns the capabilities a DaemonSet rendered from the Helm
// chart adds to the agent's container (it drops all others): file is the
// chart's golden rendering with every option on, the proxy included.
func daemonSetCaps(t *testing.T, file string) []string {
	var ds struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						SecurityContext struct {
							Capabilities struct{ Drop, Add []string }
						} `yaml:"securityContext"`
					}
				}
			}
		}
	}
	testenv.ManifestObject(t, file, "DaemonSet", &ds)
	if len(ds.Spec.Template.Spec.Containers) == 0 {
		t.Fatalf("the DaemonSet in %s has no containers", file)
	}
	c := ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities
	if len(c.Drop) != 1 || c.Drop[0] != "ALL" {
		t.Fatalf("the DaemonSet drops %v, want ALL", c.Drop)
	}
	return c.Add
}

// TestProxyCheckRunningProxy: listeners held by a running ipng-stats (the
// agent or proxy the check is for) are a warning, not a failure.
func TestProxyCheckRunningProxy(t *testing.T) {
	e := newProxyEnv(t, proxyYAML)
	cfg := e.cfgPath + ".check"
	r := strings.NewReplacer("%PORT%", fmt.Sprint(e.port), "%DOWN%", fmt.Sprint(e.down), "%BACKEND%", e.backend, "proxy:\n", "proxy:\n  enabled: true\n")
	if err := os.WriteFile(cfg, []byte(bindingsYAML+r.Replace(proxyYAML)), 0o644); err != nil {
		t.Fatal(err)
	}
	web := e.distinctPorts(1, e.port, e.web, e.down)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := e.topo.Srv.Exec(ctx, agentBin, "check", "--config", cfg, "--attribution.mode", "fallback",
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", web)).CombinedOutput()
	if err != nil {
		t.Errorf("check: %v\n%s", err, out)
	}
	want := fmt.Sprintf("warn  proxy listener :%d: in use by a running ipng-stats (pid %d)\n", e.port, e.proc.cmd.Process.Pid)
	if !strings.Contains(string(out), want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
}
